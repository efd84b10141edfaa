"""Synthetic multi-domain ReID generator: layout, determinism, caching, and a cheap check that
identity is recognisable within a domain while the domains differ."""

import filecmp
import itertools
import json
import os
import re

import cv2
import numpy as np
import pytest

from reid_plugins.data import DatasetCatalog, MetadataCatalog
from reid_plugins.data import synthetic_reid as syn
from reid_plugins.data.datasets.market1501 import load_market_style
from tests._testing import load_tool

DOMAINS = ("synA", "synB", "synC", "synD")
FEW = dict(num_distractors=5, num_junk=3)
SMALL = dict(num_train_ids=4, num_test_ids=12, images_per_id_per_cam=2, num_cams=3, **FEW)
TINY = dict(num_train_ids=2, num_test_ids=2, images_per_id_per_cam=2, num_cams=2, **FEW)
MARKET_NAME = re.compile(r"^(\d{4}|-1)_c[1-3]s1_\d{6}_00\.jpg$")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synreid")
    paths = syn.generate_synthetic_reid(str(root), seed=0, domains=DOMAINS, progress=False, **SMALL)
    return root, paths


def _files(d):
    return sorted(
        os.path.join(f, n) for f in syn.SPLIT_DIRS for n in os.listdir(os.path.join(d, f))
    )


def test_layout_and_market_loader_statistics(generated, monkeypatch):
    root, paths = generated
    assert set(paths) == set(DOMAINS)
    monkeypatch.setenv("REID_DATASETS", str(root))
    for d in DOMAINS:
        assert paths[d] == os.path.join(str(root), "synthetic_reid", d)
        names = [os.path.basename(f) for f in _files(paths[d])]
        assert all(MARKET_NAME.match(n) for n in names), names[:3]
        img = cv2.imread(
            os.path.join(paths[d], "query", os.listdir(os.path.join(paths[d], "query"))[0])
        )
        assert img.shape == (64, 32, 3)
        tr = DatasetCatalog.get(f"synthetic_reid_{d}_train")
        te = DatasetCatalog.get(f"synthetic_reid_{d}_test")
        mt, me = MetadataCatalog.get(f"synthetic_reid_{d}_train"), MetadataCatalog.get(
            f"synthetic_reid_{d}_test"
        )
        # 4 ids x 3 cams x 2 images; relabelled 0..3
        assert (mt.num_pids, mt.num_images, mt.num_cams) == (4, 24, 3)
        assert sorted({r["pid"] for r in tr}) == list(range(4))
        # one query per test id in every camera but one: 12 x 2; gallery 12 x 6 - 24 + 5 distr.
        assert (me.num_query, me.num_query_pids, me.num_gallery) == (24, 12, 53)
        assert (me.num_gallery_pids, me.num_distractors, me.num_cams) == (12, 5, 3)
        assert not any(r["pid"] == -1 for r in te)  # the 3 junk files are dropped
        assert len(names) == 24 + 24 + 53 + 3
        # train and test identities are disjoint (raw pids 1..4 vs 5..16)
        raw_train = {int(os.path.basename(r["file_name"])[:4]) for r in tr}
        assert raw_train == set(range(1, 5))
        assert {r["pid"] for r in te} - {0} == set(range(5, 17))
        # every identity is seen by every camera; each query has a cross-camera gallery match
        for pid in range(5, 17):
            recs = [r for r in te if r["pid"] == pid]
            assert {r["camid"] for r in recs} == {0, 1, 2}
            q_cams = {r["camid"] for r in recs if r["is_query"]}
            assert len(q_cams) == 2
            assert {r["camid"] for r in recs if not r["is_query"]} == {0, 1, 2}
        manifest = json.load(open(os.path.join(paths[d], "manifest.json")))
        assert manifest["statistics"]["train"] == {"ids": 4, "images": 24, "cameras": 3}
        assert manifest["statistics"]["gallery"]["images"] == me.num_gallery


def test_deterministic_and_seed_dependent(tmp_path):
    def gen(sub, seed):
        return syn.generate_synthetic_reid(
            str(tmp_path / sub), seed=seed, domains=("synB", "other"), progress=False, **TINY
        )

    first, again, other = gen("a", 0), gen("b", 0), gen("c", 1)
    for d in ("synB", "other"):
        files = _files(first[d])
        assert files == _files(again[d]) and len(files) == 8 + 8 + 5 + 3
        match, mismatch, errors = filecmp.cmpfiles(
            first[d], again[d], files + ["manifest.json"], shallow=False
        )
        assert not mismatch and not errors and len(match) == len(files) + 1
        common = sorted(set(files) & set(_files(other[d])))
        _, differ, _ = filecmp.cmpfiles(first[d], other[d], common, shallow=False)
        assert len(differ) == len(common)  # another seed draws other persons and images


def test_cache_reuse_mismatch_and_overwrite(tmp_path, monkeypatch):
    kw = dict(seed=3, domains=("synA",), progress=False, **TINY)
    d = syn.generate_synthetic_reid(str(tmp_path), **kw)["synA"]
    stamp = {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in _files(d)}

    def boom(*a, **k):
        raise AssertionError("must not render when the cache matches")

    monkeypatch.setattr(syn, "render_image", boom)
    assert syn.generate_synthetic_reid(str(tmp_path), **kw)["synA"] == d
    assert {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in _files(d)} == stamp
    with pytest.raises(ValueError) as e:
        syn.generate_synthetic_reid(str(tmp_path), **dict(kw, seed=4))
    assert "manifest.json" in str(e.value) and "seed: 3 -> 4" in str(e.value)
    assert "overwrite" in str(e.value)
    monkeypatch.undo()
    # overwrite replaces the domain with the new parameters
    syn.generate_synthetic_reid(str(tmp_path), **dict(kw, num_train_ids=3, overwrite=True))
    assert len(os.listdir(os.path.join(d, "bounding_box_train"))) == 3 * 2 * 2
    # an incomplete domain (a file lost) is regenerated, identically
    before = open(
        os.path.join(d, "query", sorted(os.listdir(os.path.join(d, "query")))[0]), "rb"
    ).read()
    lost = os.path.join(d, "query", sorted(os.listdir(os.path.join(d, "query")))[0])
    os.remove(lost)
    syn.generate_synthetic_reid(str(tmp_path), **dict(kw, num_train_ids=3))
    assert open(lost, "rb").read() == before


def test_invalid_parameters(tmp_path):
    with pytest.raises(ValueError, match="num_cams"):
        syn.generate_synthetic_reid(str(tmp_path), num_cams=10, progress=False)
    with pytest.raises(ValueError, match="distinct"):
        syn.generate_synthetic_reid(str(tmp_path), domains=("a", "a"), progress=False)
    with pytest.raises(ValueError, match="test_ids_scale"):
        syn.generate_synthetic_reid(str(tmp_path), test_ids_scale=0, progress=False)
    with pytest.raises(ValueError, match="test_ids_scale"):  # would be silently ignored
        syn.generate_synthetic_reid(str(tmp_path), num_test_ids=3, test_ids_scale=2, progress=False)


def _torso_legs_colour(path):
    """Grey-world normalised mean colour of a central torso box and a leg box."""
    img = cv2.imread(path)[:, :, ::-1].astype(np.float64)
    img = img / (img.reshape(-1, 3).mean(0) + 1e-6)
    h, w = img.shape[:2]
    torso = img[int(0.25 * h) : int(0.45 * h), int(0.35 * w) : int(0.65 * w)]
    legs = img[int(0.62 * h) : int(0.85 * h), int(0.3 * w) : int(0.7 * w)]
    return np.concatenate([torso.reshape(-1, 3).mean(0), legs.reshape(-1, 3).mean(0)])


def test_identity_recognisable_by_handcrafted_colour(generated):
    """Rank-1 (Market protocol: same pid + same camera removed) far above chance (1/12).

    At seed 0 the four domains give about 0.88 / 0.88 / 0.67 / 0.25 (synD, MSMT17-like: dark
    winter clothes and the widest spread of camera colour responses, is the hardest)."""
    _, paths = generated
    for d in DOMAINS:
        recs = load_market_style(paths[d], "test", dataset_name=d)
        q = [r for r in recs if r["is_query"]]
        g = [r for r in recs if not r["is_query"]]
        fq = np.stack([_torso_legs_colour(r["file_name"]) for r in q])
        fg = np.stack([_torso_legs_colour(r["file_name"]) for r in g])
        dist = ((fq[:, None] - fg[None]) ** 2).sum(-1)
        hits = []
        for i, r in enumerate(q):
            valid = np.array([not (x["pid"] == r["pid"] and x["camid"] == r["camid"]) for x in g])
            hits.append(g[int(np.argmin(np.where(valid, dist[i], np.inf)))]["pid"] == r["pid"])
        assert np.mean(hits) >= (0.2 if d == "synD" else 0.4), (d, np.mean(hits))  # chance 1/12


def test_domains_differ_more_than_cameras(generated):
    """Per-domain image statistics (mean colour, contrast, sharpness) separate the domains
    by far more than the cameras within a domain differ."""
    _, paths = generated

    def stats(files):
        ims = np.stack([cv2.imread(f).astype(np.float32) for f in files])
        sharp = np.mean([np.log(cv2.Laplacian(i, cv2.CV_32F).var()) for i in ims])
        return np.concatenate([ims.mean((0, 1, 2)), [ims.std(), 20 * sharp]])

    per_domain, per_cam_spread = {}, []
    for d in DOMAINS:
        recs = load_market_style(paths[d], "train", dataset_name=d)
        recs += load_market_style(paths[d], "test", dataset_name=d)
        per_domain[d] = stats([r["file_name"] for r in recs])
        cams = [stats([r["file_name"] for r in recs if r["camid"] == c]) for c in range(3)]
        per_cam_spread += [np.linalg.norm(a - b) for a, b in itertools.combinations(cams, 2)]
    between = [
        np.linalg.norm(per_domain[a] - per_domain[b]) for a, b in itertools.combinations(DOMAINS, 2)
    ]
    assert min(between) > 1.3 * max(per_cam_spread), (between, per_cam_spread)


def test_domain_styles():
    assert syn.domain_style("synA")["resolution"] == 1.0
    assert syn.domain_style("synC")["resolution"] < 0.5
    custom = syn.domain_style("myDomain", seed=5)
    assert custom == syn.domain_style("myDomain", seed=5) != syn.domain_style("myDomain", seed=6)
    assert custom["background"] in syn.BACKGROUNDS


def test_cli_prints_statistics(tmp_path, capsys):
    tool = load_tool("generate_synthetic_reid")
    args = [
        "--root",
        str(tmp_path),
        "--seed",
        "0",
        "--domains",
        "synD",
        "--num-train-ids",
        "2",
        "--num-test-ids",
        "3",
        "--images-per-id-per-cam",
        "1",
        "--num-cams",
        "2",
        "--num-distractors",
        "5",
    ]
    assert tool.main(args) == 0
    out = capsys.readouterr().out
    assert "synthetic_reid_synD" in out
    assert "| train   | 2   | 4      | 2       |" in out
    assert "| query   | 3   | 3      |" in out  # one query per id (2 cams, one excluded)
    assert "(incl. 5 distractors)" in out


def test_dataset_like_layout(tmp_path, monkeypatch):
    """Default layout: the domains' camera counts, identity counts and images per identity
    follow the real datasets (Market 6 cams / 17.2 images per id, Duke 8 / 23.5, CUHK03 2 /
    9.6, MSMT17 15 -> 9 / 31.3); one query per identity and camera, each with a gallery match
    in another camera."""
    monkeypatch.setattr(syn, "BASE_TRAIN_IDS", 6)
    monkeypatch.setattr(syn, "BASE_TEST_IDS", 5)
    paths = syn.generate_synthetic_reid(
        str(tmp_path), num_distractors=2, num_junk=1, progress=False
    )
    per_id, cams = {}, {}
    for d in DOMAINS:
        tr = load_market_style(paths[d], "train", dataset_name=d)
        te = load_market_style(paths[d], "test", dataset_name=d)
        cams[d] = len({r["camid"] for r in tr + te})
        per_id[d] = len(tr) / len({r["pid"] for r in tr})
        q = [r for r in te if r["is_query"]]
        g = [r for r in te if not r["is_query"] and r["pid"] > 0]
        for pid in {r["pid"] for r in q}:
            q_cams = [r["camid"] for r in q if r["pid"] == pid]
            assert len(q_cams) == len(set(q_cams)) >= 2  # one query per camera, >= 2 cameras
            g_cams = {r["camid"] for r in g if r["pid"] == pid}
            assert set(q_cams) <= g_cams  # every query has a cross-camera match
        manifest = json.load(open(os.path.join(paths[d], "manifest.json")))
        assert manifest["params"]["version"] == syn.GENERATOR_VERSION
    assert cams == {"synA": 6, "synB": 8, "synC": 2, "synD": 9}
    assert per_id["synC"] < per_id["synA"] < per_id["synB"] < per_id["synD"], per_id
    assert len(load_market_style(paths["synD"], "train", dataset_name="d")) > 3 * len(
        load_market_style(paths["synC"], "train", dataset_name="c")
    )


def test_test_ids_scale_grows_only_the_test_split(tmp_path, monkeypatch):
    """``test_ids_scale`` multiplies every domain's dataset-like test ids (ratios kept); the
    train split is byte-identical and the first test identities keep their images. At 1 it
    is not stored, so data generated before the parameter existed stay cached."""
    monkeypatch.setattr(syn, "BASE_TRAIN_IDS", 3)
    monkeypatch.setattr(syn, "BASE_TEST_IDS", 4)
    kw = dict(domains=("synA", "synC"), num_distractors=1, num_junk=1, progress=False)
    one = syn.generate_synthetic_reid(str(tmp_path / "x1"), **kw)
    two = syn.generate_synthetic_reid(str(tmp_path / "x2"), test_ids_scale=2, **kw)
    for d, test_ids in (("synA", 4), ("synC", 8)):  # synC's test_ids_factor 2 is kept
        m1 = json.load(open(os.path.join(one[d], "manifest.json")))
        m2 = json.load(open(os.path.join(two[d], "manifest.json")))
        assert "test_ids_scale" not in m1["params"] and m2["params"]["test_ids_scale"] == 2.0
        ids1 = {r["pid"] for r in load_market_style(one[d], "test", dataset_name=d)}
        ids2 = {r["pid"] for r in load_market_style(two[d], "test", dataset_name=d)}
        assert len(ids1 - {0, -1}) == test_ids and len(ids2 - {0, -1}) == 2 * test_ids
        assert ids1 - {0, -1} < ids2
        train = "bounding_box_train"
        names = sorted(os.listdir(os.path.join(one[d], train)))
        assert names == sorted(os.listdir(os.path.join(two[d], train)))
        _, mismatch, errors = filecmp.cmpfiles(
            os.path.join(one[d], train), os.path.join(two[d], train), names, shallow=False
        )
        assert not mismatch and not errors
        q1 = sorted(os.listdir(os.path.join(one[d], "query")))
        q2 = set(os.listdir(os.path.join(two[d], "query")))
        assert set(q1) < q2  # the first test ids' queries: same names (and frames)
        _, mismatch, _ = filecmp.cmpfiles(
            os.path.join(one[d], "query"), os.path.join(two[d], "query"), q1, shallow=False
        )
        assert not mismatch
    again = syn.generate_synthetic_reid(str(tmp_path / "x1"), test_ids_scale=1.0, **kw)
    assert again == one  # same params as before: cached, no regeneration error


def test_clothing_priors_differ_by_season():
    """Summer (Market-like synA) clothes are brighter and more often short-sleeved than winter
    (Duke-like synB) clothes."""

    def draw(clothing):
        r = np.random.default_rng(0)
        ids = [syn.sample_identity(r, clothing) for _ in range(300)]
        return np.mean([np.mean(i["top"]) for i in ids]), np.mean([i["long_sleeves"] for i in ids])

    (summer_v, summer_long), (winter_v, winter_long) = draw("summer"), draw("winter")
    assert summer_v > winter_v + 30 and summer_long < 0.4 < 0.9 < winter_long
