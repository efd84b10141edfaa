"""Synthetic person-search scenes: determinism, caching, and read-back by the real parsers."""

import os
from collections import defaultdict

import numpy as np
import pytest
import scipy.io

from reid_plugins.data.catalog import DatasetCatalog
from reid_plugins.data.datasets.cuhk_sysu import (
    cuhk_sysu_gallery_sizes,
    load_cuhk_sysu_gallery,
    load_cuhk_sysu_protocol,
    load_cuhk_sysu_query,
    load_cuhk_sysu_train,
)
from reid_plugins.data.datasets.prw import (
    load_prw_annotation,
    load_prw_gallery,
    load_prw_query,
    load_prw_train,
)
from reid_plugins.data.datasets.scene_common import UNLABELED_PID
from reid_plugins.data.synthetic_scenes import (
    draw_person,
    generate_synthetic_scenes,
    random_appearance,
)

TINY = dict(
    num_train_images=10,
    num_test_images=12,
    num_train_ids=4,
    num_test_ids=3,
    num_cams=3,
    image_size=(64, 96),
    progress=False,
)


def _tree(folder):
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


@pytest.mark.parametrize("fmt", ["cuhk_sysu", "prw"])
def test_deterministic_bytes(tmp_path, fmt):
    a = generate_synthetic_scenes(str(tmp_path / "a"), fmt=fmt, seed=3, **TINY)
    b = generate_synthetic_scenes(str(tmp_path / "b"), fmt=fmt, seed=3, **TINY)
    c = generate_synthetic_scenes(str(tmp_path / "c"), fmt=fmt, seed=4, **TINY)
    ta, tb, tc = _tree(a), _tree(b), _tree(c)
    assert ta == tb and len(ta) > 20
    images = [k for k in ta if k.endswith(".jpg")]
    assert len(images) == 22 and sum(ta[k] != tc.get(k) for k in images) >= 20


def test_cached_and_overwrite(tmp_path):
    root = str(tmp_path)
    out = generate_synthetic_scenes(root, **TINY)
    manifest = os.path.join(out, "manifest.json")
    jpg = os.path.join(out, "Image", "SSM", "s1.jpg")
    stamp = os.stat(manifest).st_mtime_ns, os.stat(jpg).st_mtime_ns
    assert generate_synthetic_scenes(root, **TINY) == out
    assert (os.stat(manifest).st_mtime_ns, os.stat(jpg).st_mtime_ns) == stamp  # not rewritten
    with open(jpg, "rb") as f:
        original = f.read()
    os.remove(jpg)  # damaged cache with the same arguments: regenerated identically
    generate_synthetic_scenes(root, **TINY)
    with open(jpg, "rb") as f:
        assert f.read() == original
    with pytest.raises(ValueError, match="overwrite=True"):
        generate_synthetic_scenes(root, seed=1, **TINY)
    generate_synthetic_scenes(root, seed=1, overwrite=True, **TINY)
    with open(jpg, "rb") as f:
        assert f.read() != original
    foreign = tmp_path / "x" / "synthetic_prw"
    foreign.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="manifest.json"):
        generate_synthetic_scenes(str(tmp_path / "x"), fmt="prw", overwrite=True, **TINY)
    with pytest.raises(ValueError, match="num_test_images"):
        generate_synthetic_scenes(root, **{**TINY, "num_test_images": 8})


def _check_boxes_inside(records):
    for r in records:
        b = r["boxes"]
        assert len(b) == len(r["pids"])
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= r["width"]).all() and (b[:, 3] <= r["height"]).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert (r["height"], r["width"]) == (64, 96)


def test_cuhk_layout_read_by_real_parsers(tmp_path, mat_strings):
    out = generate_synthetic_scenes(str(tmp_path), fmt="cuhk_sysu", seed=0, **TINY)
    train, gallery = load_cuhk_sysu_train(out), load_cuhk_sysu_gallery(out)
    queries = load_cuhk_sysu_query(out)
    assert (len(train), len(gallery), len(queries)) == (10, 12, 3)
    _check_boxes_inside(train + gallery)
    images_of = defaultdict(set)
    for r in train:
        for p in r["pids"][r["pids"] != UNLABELED_PID]:
            images_of[int(p)].add(r["image_id"])
    assert sorted(images_of) == [0, 1, 2, 3]
    assert all(len(v) >= 2 for v in images_of.values())
    assert sum((r["pids"] == UNLABELED_PID).sum() for r in train) >= 10  # ~1-3 per image
    # raw train ids (Train.mat idnames) and test ids are disjoint
    mat = scipy.io.loadmat(os.path.join(out, "annotation", "test", "train_test", "Train.mat"))
    train_raw = {int(name[1:]) for name in mat_strings(mat["Train"], "idname")}
    test_raw = {q["query_pid"] for q in queries}
    assert len(train_raw) == 4 and len(test_raw) == 3 and not train_raw & test_raw
    assert {int(p) for r in gallery for p in r["pids"] if p >= 0} == test_raw
    assert cuhk_sysu_gallery_sizes(out) == [10]  # 12 test images: only TestG10 fits
    for n in (10, -1):
        for q in load_cuhk_sysu_protocol(out, n):
            gal = list(q["gallery_image_ids"])
            assert q["query_image_id"] not in gal and len(gal) == (10 if n == 10 else 11)
            assert len(q["gallery_gt"]) >= 1 and set(q["gallery_gt"]) <= set(gal)


def test_gallery_sizes_choose_the_protocol_files_and_keep_their_content(tmp_path):
    """Only the asked TestG<N> files are written; each equals the one written by default (the
    distractor order does not depend on which files are written); bad sizes are refused."""
    args = {**TINY, "num_test_images": 24}
    full = generate_synthetic_scenes(str(tmp_path / "a"), **args)
    some = generate_synthetic_scenes(str(tmp_path / "b"), gallery_sizes=[10], **args)
    assert cuhk_sysu_gallery_sizes(full) == [10, 20] and cuhk_sysu_gallery_sizes(some) == [10]
    ta, tb = _tree(full), _tree(some)
    assert set(ta) - set(tb) == {os.path.join("annotation", "test", "train_test", "TestG20.mat")}
    assert all(ta[k] == tb[k] for k in tb if k != "manifest.json")
    for bad, fmt in (([24], "cuhk_sysu"), ([0], "cuhk_sysu"), ([], "cuhk_sysu"), ([10], "prw")):
        with pytest.raises(ValueError, match="gallery_sizes"):
            generate_synthetic_scenes(str(tmp_path / "c"), fmt=fmt, gallery_sizes=bad, **args)


def test_prw_layout_read_by_real_parsers(tmp_path):
    out = generate_synthetic_scenes(str(tmp_path), fmt="prw", seed=0, **TINY)
    train, gallery, queries = load_prw_train(out), load_prw_gallery(out), load_prw_query(out)
    assert (len(train), len(gallery)) == (10, 12) and len(queries) >= 3
    _check_boxes_inside(train + gallery)
    cams_of = defaultdict(set)
    for r in train:
        for p in r["pids"][r["pids"] != UNLABELED_PID]:
            cams_of[int(p)].add(r["camid"])
    assert sorted(cams_of) == [0, 1, 2, 3]
    assert all(len(v) >= 2 for v in cams_of.values())  # several images and cameras
    assert {r["camid"] for r in train + gallery} == {0, 1, 2}
    train_raw = set()
    for r in train:
        _, pids = load_prw_annotation(os.path.join(out, "annotations", r["image_id"] + ".mat"))
        train_raw |= {int(p) for p in pids if p >= 0}
    test_raw = {int(p) for r in gallery for p in r["pids"] if p >= 0}
    assert len(train_raw) == 4 and len(test_raw) == 3 and not train_raw & test_raw
    assert {q["query_pid"] for q in queries} == test_raw
    keys = set()
    for f in os.listdir(os.path.join(out, "annotations")):
        if f.endswith(".mat"):
            keys |= {
                k for k in scipy.io.loadmat(os.path.join(out, "annotations", f)) if k[0] != "_"
            }
    assert keys == {"box_new", "anno_file", "anno_previous"}  # fallback exercised


def test_registered_synthetic_uses_existing_data(tmp_path, monkeypatch):
    generate_synthetic_scenes(str(tmp_path), fmt="prw", **TINY)
    monkeypatch.setenv("REID_DATASETS", str(tmp_path))
    assert len(DatasetCatalog.get("synthetic_prw_gallery")) == 12
    assert DatasetCatalog.get("synthetic_prw_train")[0]["dataset"] == "synthetic_prw_train"


def test_draw_person_identities_differ():
    rng = np.random.default_rng(0)
    a, b = random_appearance(rng), random_appearance(rng)
    img_a, mask_a = draw_person(a, 60, 24, np.random.default_rng(1))
    img_b, mask_b = draw_person(b, 60, 24, np.random.default_rng(1))
    assert img_a.shape == (60, 24, 3) and mask_a.dtype == bool
    assert 0.3 < mask_a.mean() < 0.95  # a figure, not a block
    both = mask_a & mask_b
    assert np.abs(img_a[both].astype(int) - img_b[both]).mean() > 10


def _cooccurrence(records):
    """{(pid_a, pid_b): [camid of each image holding both]} over labelled pids."""
    pairs = defaultdict(list)
    for r in records:
        pids = sorted({int(p) for p in r["pids"] if p >= 0})
        for i, a in enumerate(pids):
            for b in pids[i + 1 :]:
                pairs[(a, b)].append(r["camid"])
    return pairs


def test_groups_reappear_together_across_cameras(tmp_path):
    """Walking groups (the context RCP uses): pairs of identities that share an image share
    several, in different cameras; a query's image holds its group, whose members are seen
    again with it in a gallery image."""
    kw = dict(TINY, num_train_images=40, num_test_images=40, num_train_ids=16, num_test_ids=12)
    kw["image_size"] = (96, 128)
    out = generate_synthetic_scenes(str(tmp_path), fmt="prw", seed=0, **kw)
    pairs = _cooccurrence(load_prw_train(out) + load_prw_gallery(out))
    repeated = [cams for cams in pairs.values() if len(cams) >= 2]
    assert len(repeated) >= 8, pairs
    assert sum(len(set(cams)) >= 2 for cams in repeated) >= 0.5 * len(repeated)
    # a random layout (no groups) would make repeated pairs rare: most pairs here repeat
    assert len(repeated) >= 0.4 * len(pairs)
    gallery = {r["image_id"]: r for r in load_prw_gallery(out)}
    with_context = 0
    for q in load_prw_query(out):
        mates = {int(p) for p in q["pids"] if p >= 0} - {q["query_pid"]}
        others = [
            g
            for g in gallery.values()
            if g["image_id"] != q["image_id"] and q["query_pid"] in g["pids"]
        ]
        with_context += any(mates & {int(p) for p in g["pids"]} for g in others)
    assert with_context >= 5


def test_prw_gallery_has_labelled_persons_who_are_not_queries(tmp_path):
    """Real PRW's gallery holds labelled persons who are never queried; several frames per
    camera visit leave labelled gallery boxes of queried persons besides their query box (so
    the teacher's crop gallery is not empty)."""
    kw = dict(TINY, num_test_ids=3, num_gallery_only_ids=2, num_test_images=16)
    out = generate_synthetic_scenes(str(tmp_path), fmt="prw", seed=0, **kw)
    queries, gallery = load_prw_query(out), load_prw_gallery(out)
    queried = {q["query_pid"] for q in queries}
    labelled = {int(p) for r in gallery for p in r["pids"] if p >= 0}
    assert len(queried) == 3 and len(labelled - queried) == 2
    test_ids = scipy.io.loadmat(os.path.join(out, "ID_test.mat"))["ID_test"].ravel()
    assert set(test_ids.astype(int)) == labelled
    boxes = sum(int((r["pids"] >= 0).sum()) for r in gallery)
    assert boxes > len(queries)


def test_absent_persons_written_as_1x0_like_the_real_files(tmp_path):
    out = generate_synthetic_scenes(str(tmp_path), fmt="cuhk_sysu", seed=0, **TINY)
    mat = scipy.io.loadmat(os.path.join(out, "annotation", "test", "train_test", "TestG10.mat"))
    shapes = {g["idlocate"][0, k].shape for g in mat["TestG10"]["Gallery"][0] for k in range(10)}
    assert shapes == {(1, 4), (1, 0)}


@pytest.mark.parametrize("method", ["tdn", "oim"])
def test_synthetic_prw_configs_read_what_the_generator_writes(tmp_path, monkeypatch, method):
    """`generate_synthetic_scenes.py --format prw` and projects/*/synthetic_prw.yaml agree on
    the root; the teacher's crop test set of synthetic PRW has gallery records (issue: it had
    none, every labelled test box being a query)."""
    from reid_plugins.config import add_all_configs, get_cfg
    from reid_plugins.data.person_crops import build_person_crops
    from tests._testing import load_tool

    root = str(tmp_path)
    args = ["--root", root, "--format", "prw", "--num-train-images", "10", "--num-test-images"]
    args += ["16", "--num-train-ids", "4", "--num-test-ids", "3", "--num-gallery-only-ids", "2"]
    args += ["--num-cams", "3", "--image-size", "64,96"]
    assert load_tool("generate_synthetic_scenes").main(args) == 0
    monkeypatch.setenv("REID_DATASETS", root)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = get_cfg()
    add_all_configs(cfg)
    cfg.merge_from_file(os.path.join(repo, "projects", method, "synthetic_prw.yaml"))
    assert list(cfg.DATASETS.TRAIN) == ["synthetic_prw_train"]
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        recs = DatasetCatalog.get(name)
        assert recs and all(
            r["file_name"].startswith(os.path.join(root, "synthetic_prw")) for r in recs
        )
    if method == "tdn":
        teacher = get_cfg()
        add_all_configs(teacher)
        teacher.merge_from_file(os.path.join(repo, cfg.MODEL.TDN.TEACHER.CONFIG_FILE))
        assert list(teacher.DATASETS.TRAIN) == ["synthetic_prw_crops_train"]
        out = build_person_crops("synthetic_prw", root, size=(32, 16), progress=False)
        gallery = os.listdir(os.path.join(out, "bounding_box_test"))
        assert len(gallery) >= 2 and len(os.listdir(os.path.join(out, "query"))) >= 3
