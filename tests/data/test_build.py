"""Tests of the ReID train / test / feature-extraction loaders on tiny registered datasets."""

import itertools
import uuid
from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from reid_plugins.config import get_cfg
from reid_plugins.data import DatasetCatalog, MetadataCatalog
from reid_plugins.data.build import (
    build_feature_extraction_loader,
    build_reid_test_loader,
    build_reid_train_loader,
    get_train_pids_per_domain,
    infer_num_classes,
)
from reid_plugins.data.detection_utils import ImageReadError, read_image
from reid_plugins.data.transforms import ReIDTransforms


def _write(path, seed, h=20, w=10):
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return str(path)


def _train_set(folder, counts, pid_base=0):
    """Records with raw pids pid_base + i; identity i has counts[i] images."""
    folder.mkdir()
    records = []
    for i, n in enumerate(counts):
        for j in range(n):
            path = _write(folder / f"{pid_base + i:04d}_c{j % 2 + 1}_{j}.png", seed=100 * i + j)
            records.append({"file_name": path, "pid": pid_base + i, "camid": j % 2})
    return records


@pytest.fixture
def catalog():
    """Register datasets under unique names; everything is removed afterwards."""
    names = []

    def register(stem, records):
        name = f"{stem}_{uuid.uuid4().hex[:8]}"
        recs = [dict(r, dataset=name) for r in records]
        DatasetCatalog.register(name, lambda: [dict(r) for r in recs])
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _cfg(train_names, batch=8, k=2, multi=False, workers=0, seed=0):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = list(train_names)
    cfg.INPUT.SIZE_TRAIN = [16, 8]
    cfg.INPUT.SIZE_TEST = [16, 8]
    cfg.INPUT.PADDING.SIZE = 2
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.DATALOADER.NUM_INSTANCE = k
    cfg.DATALOADER.MULTI_SOURCE = multi
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SEED = seed
    return cfg


@pytest.fixture
def two_domains(tmp_path, catalog):
    # Domain A: 6 identities (one with a single image); domain B: 5 identities. Raw pids of
    # both start at 10, so they collide unless combined.
    a = catalog("tinyA_train", _train_set(tmp_path / "a", [3, 3, 1, 3, 2, 3], pid_base=10))
    b = catalog("tinyB_train", _train_set(tmp_path / "b", [4, 4, 4, 4, 4], pid_base=10))
    return a, b


def _check_pk(batch, key, k):
    counts = Counter(d[key] for d in batch)
    assert set(counts.values()) == {k}, counts


def test_single_source_combines_sets_into_global_pk_batches(two_domains):
    a, b = two_domains
    loader = build_reid_train_loader(_cfg([a, b]))
    assert not loader.multi_source and loader.batch_size == 8
    pids, datasets = set(), set()
    for batch in itertools.islice(loader, 12):
        assert isinstance(batch, list) and len(batch) == 8
        _check_pk(batch, "pid", 2)
        for d in batch:
            assert d["image"].shape == (3, 16, 8) and d["image"].dtype == torch.float32
            assert d["pid"] == d["domain_pid"] + (6 if d["domain"] == 1 else 0)
            assert d["dataset"] == (a, b)[d["domain"]]
            pids.add(d["pid"])
            datasets.add(d["dataset"])
    assert datasets == {a, b} and pids <= set(range(11)) and len(pids) > 6


def test_multi_source_one_batch_per_domain_never_mixed(two_domains):
    a, b = two_domains
    loader = build_reid_train_loader(_cfg([a, b], multi=True))
    assert loader.multi_source and loader.num_pids_per_domain == [6, 5]
    for step in itertools.islice(loader, 6):
        assert isinstance(step, list) and len(step) == 2
        for domain, batch in enumerate(step):
            assert len(batch) == 8
            assert {d["domain"] for d in batch} == {domain}
            assert {d["dataset"] for d in batch} == {(a, b)[domain]}
            _check_pk(batch, "domain_pid", 2)


def test_shuffled_training_sampler_option(two_domains):
    cfg = _cfg(two_domains[:1], batch=5)
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    batches = list(itertools.islice(build_reid_train_loader(cfg), 3))
    names = [d["file_name"] for b in batches for d in b]
    # 15 = the whole set once (one random permutation), in batches of 5 (not P x K).
    assert [len(b) for b in batches] == [5, 5, 5] and len(set(names)) == 15


def test_train_pids_per_domain_and_num_classes(two_domains):
    cfg = _cfg(two_domains)
    assert get_train_pids_per_domain(cfg) == [6, 5]
    assert infer_num_classes(cfg) == 11
    cfg.MODEL.HEADS.NUM_CLASSES = 42
    assert infer_num_classes(cfg) == 42


def test_worker_loader_is_deterministic_given_cfg_seed(two_domains):
    def first_batches(seed):
        loader = build_reid_train_loader(_cfg(two_domains, workers=2, seed=seed))
        batches = list(itertools.islice(loader, 3))
        return [d["file_name"] for b in batches for d in b], torch.stack(
            [d["image"] for b in batches for d in b]
        )

    names1, images1 = first_batches(3)
    names2, images2 = first_batches(3)
    names3, _ = first_batches(4)
    assert names1 == names2 and torch.equal(images1, images2)  # augmentations too
    assert names1 != names3


def test_train_loader_errors_name_the_problem(two_domains, catalog):
    a, b = two_domains
    with pytest.raises(ValueError, match=rf"{b}.*P = .*= 6 identities.*only 5"):
        build_reid_train_loader(_cfg([a, b], batch=12, k=2, multi=True))
    with pytest.raises(ValueError, match=r"batch_size \(8\).*\(3\)"):
        build_reid_train_loader(_cfg([a], batch=8, k=3))
    with pytest.raises(ValueError, match="DATASETS.TRAIN is empty"):
        build_reid_train_loader(_cfg([]))
    with pytest.raises(KeyError, match="not_registered_xyz"):
        build_reid_train_loader(_cfg(["not_registered_xyz"]))
    empty = catalog("tiny_empty", [])
    with pytest.raises(ValueError, match=f"'{empty}' is empty"):
        build_reid_train_loader(_cfg([empty]))
    with pytest.raises(ValueError, match="SAMPLER_TRAIN"):
        cfg = _cfg([a])
        cfg.DATALOADER.SAMPLER_TRAIN = "Nope"
        build_reid_train_loader(cfg)


def test_corrupt_training_image_raises_or_is_dropped(tmp_path, catalog, caplog):
    records = _train_set(tmp_path / "c", [2, 2, 2])
    bad = tmp_path / "c" / "0003_c1_broken.jpg"
    data = cv2.imencode(".jpg", np.zeros((20, 10, 3), np.uint8))[1].tobytes()
    bad.write_bytes(data[: len(data) // 2])
    records.append({"file_name": str(bad), "pid": 3, "camid": 0})
    name = catalog("tiny_corrupt", records)
    # P = 4 = all identities, so every batch holds 2 copies of the broken image.
    with pytest.raises(ImageReadError, match="0003_c1_broken.jpg"):
        next(iter(build_reid_train_loader(_cfg([name]))))
    cfg = _cfg([name])
    cfg.DATALOADER.SKIP_CORRUPT = True
    loader = build_reid_train_loader(cfg)
    with caplog.at_level("WARNING"):
        batches = list(itertools.islice(loader, 2))
    assert [len(b) for b in batches] == [6, 6]
    assert all(d["domain_pid"] != 3 for b in batches for d in b)
    assert loader.num_dropped == 4
    assert "0003_c1_broken.jpg" in caplog.text and "Dropped 2" in caplog.text


@pytest.fixture
def test_set(tmp_path, catalog):
    folder = tmp_path / "t"
    folder.mkdir()
    # Interleaved query/gallery records: the loader must put queries first, in order.
    flags = [False, True, False, False, True, False, True, False]
    records = [
        {
            "file_name": _write(folder / f"{i:04d}_c{i % 2 + 1}.png", seed=i),
            "pid": i // 2,
            "camid": i % 2,
            "is_query": q,
        }
        for i, q in enumerate(flags)
    ]
    return catalog("tiny_test", records), records


def test_test_loader_order_flags_and_counts(test_set):
    name, records = test_set
    cfg = _cfg([])
    cfg.TEST.IMS_PER_BATCH = 3
    loader, info = build_reid_test_loader(cfg, name)
    assert info == {"dataset_name": name, "num_query": 3, "num_gallery": 5}
    batches = list(loader)
    assert [len(b) for b in batches] == [3, 3, 2]
    out = [d for b in batches for d in b]
    expected = [r for r in records if r["is_query"]] + [r for r in records if not r["is_query"]]
    assert [d["file_name"] for d in out] == [r["file_name"] for r in expected]
    for d, r in zip(out, expected):
        assert (d["is_query"], d["pid"], d["camid"]) == (r["is_query"], r["pid"], r["camid"])
        assert d["image"].shape == (3, 16, 8)
    again = [d["image"] for b in build_reid_test_loader(cfg, name)[0] for d in b]
    assert all(torch.equal(x, d["image"]) for x, d in zip(again, out))  # no augmentation


def test_test_loader_rejects_empty_query_or_gallery(tmp_path, catalog):
    path = _write(tmp_path / "0001_c1.png", seed=0)
    recs = [{"file_name": path, "pid": 1, "camid": 0, "is_query": False}]
    only_gallery = catalog("tiny_noquery", recs)
    with pytest.raises(ValueError, match=f"'{only_gallery}' has 0 query and 1 gallery"):
        build_reid_test_loader(_cfg([]), only_gallery)
    only_query = catalog("tiny_nogallery", [dict(recs[0], is_query=True)])
    with pytest.raises(ValueError, match=f"'{only_query}' has 1 query and 0 gallery"):
        build_reid_test_loader(_cfg([]), only_query)
    no_flag = catalog("tiny_noflag", [{"file_name": path, "pid": 1, "camid": 0}])
    with pytest.raises(ValueError, match=f"'{no_flag}' lacks \\['is_query'\\]"):
        build_reid_test_loader(_cfg([]), no_flag)


def test_feature_extraction_loader_in_order_with_eval_transforms(two_domains):
    a, _ = two_domains
    records = DatasetCatalog.get(a)
    cfg = _cfg([a])
    cfg.INPUT.FLIP.PROB = 1.0  # would mirror every image if training transforms were used
    loader = build_feature_extraction_loader(records, cfg, batch_size=4)
    out = [d for b in loader for d in b]
    assert [len(b) for b in loader] == [4, 4, 4, 3]
    assert [d["file_name"] for d in out] == [r["file_name"] for r in records]
    eval_t = ReIDTransforms(size=(16, 8), is_train=False)
    for d in out:
        assert torch.equal(d["image"], eval_t(read_image(d["file_name"])))


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_resumes_exactly(two_domains, workers):
    """Batch k (indices *and* augmentations) is the same whether or not batches 0..k-1 were
    drawn, with any number of workers: what `--resume` relies on."""
    cfg = _cfg(two_domains, batch=8, k=2, multi=True, workers=workers, seed=3)
    cfg.INPUT.REA.ENABLED = True
    full = list(itertools.islice(iter(build_reid_train_loader(cfg)), 5))
    torch.rand(7)  # main-process RNG use in between must not matter
    resumed_loader = build_reid_train_loader(cfg)
    resumed_loader.set_start_iter(3)
    resumed = list(itertools.islice(iter(resumed_loader), 2))
    for want, got in zip(full[3:], resumed):
        for dom_want, dom_got in zip(want, got):
            assert [r["file_name"] for r in dom_want] == [r["file_name"] for r in dom_got]
            for a, b in zip(dom_want, dom_got):
                assert torch.equal(a["image"], b["image"])
    # and augmentation really is random across batches (not a constant seed)
    assert not torch.equal(full[0][0][0]["image"], full[1][0][0]["image"])


def test_one_seeding_protocol_for_crops_and_scenes():
    """SeededBatchSampler: batch k position j gets SeedSequence([seed, k, offset + j]); a
    resumed sampler (set_start_iter) reproduces the same (index, seed) pairs; MapDataset passes
    the seed to a mapper that takes one and seeds the global RNGs for any other mapper."""
    import numpy as np
    import torch

    from reid_plugins.data.build import MapDataset, SeededBatchSampler, sample_seed
    from reid_plugins.data.scene_build import SceneTrainBatchSampler

    assert sample_seed(3, 2, 1) == int(np.random.SeedSequence([3, 2, 1]).generate_state(1)[0])
    plain = [[0, 1], [2, 3], [4, 5], [6, 7]]
    s = SeededBatchSampler(plain, seed=3, position_offset=10)
    full = list(s)
    assert full[2] == [(4, sample_seed(3, 2, 10)), (5, sample_seed(3, 2, 11))]
    s.set_start_iter(2)
    assert list(s) == full[2:]
    # a sampler with its own set_start_iter (scenes) is delegated to, not skipped through
    scene = SceneTrainBatchSampler(7, 4, seed=1, rank=0, world_size=1)
    seeded = SeededBatchSampler(scene, 1, scene.position_offset)
    it = iter(seeded)
    first = [next(it) for _ in range(4)]
    seeded.set_start_iter(3)
    assert next(iter(seeded)) == first[3]
    assert [i for i, _ in first[1]] == scene.global_batch(1)

    seen = []
    with_seed = MapDataset([{"a": 1}], lambda r, seed=None: seen.append(seed) or r)
    with_seed[(0, 42)]
    assert seen == [42]
    draws = MapDataset([{"a": 1}], lambda r: float(torch.rand(1)))
    assert draws[(0, 5)] == draws[(0, 5)] != draws[(0, 6)]


def test_seeded_mapper_draws_equal_a_manual_seed_and_leave_no_trace(monkeypatch):
    """A mapper without a ``seed`` keyword draws exactly what it would after
    ``torch.manual_seed`` / ``np.random.seed`` / ``random.seed`` of the sample seed, the three
    global states are restored afterwards, and no CUDA re-seed is requested (it formatted the
    stack on every sample and, in a main-process loader on a GPU, overwrote the model's CUDA
    RNG)."""
    import random

    import numpy as np
    import torch

    from reid_plugins.data.build import MapDataset

    def draw(_record):
        return float(torch.rand(1)), float(np.random.rand()), random.random()

    torch.manual_seed(7), np.random.seed(7 % 2**32), random.seed(7)
    expected = draw(None)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    after = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    cuda_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: cuda_seeds.append(s))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda s: cuda_seeds.append(s))
    assert MapDataset([{"a": 1}], draw)[(0, 7)] == expected
    assert torch.equal(torch.get_rng_state(), after[0])
    assert np.array_equal(np.random.get_state()[1], after[1])
    assert random.getstate() == after[2]
    assert cuda_seeds == []
