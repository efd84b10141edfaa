"""Scene pipeline for person search: resize rule, flip with boxes, batching, loaders, resume."""

import uuid

import cv2
import numpy as np
import pytest
import torch

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.data import DatasetCatalog
from reid_plugins.data.detection_utils import ImageReadError
from reid_plugins.data.scene_build import (
    SceneTrainBatchSampler,
    build_scene_query_loader,
    build_scene_test_loader,
    build_scene_train_loader,
    get_scene_train_records,
    search_dataset_pair,
)
from reid_plugins.data.scene_mapper import SceneDatasetMapper, scene_resize_shape
from reid_plugins.modeling.person_search import batch_scene_images

RED = (255, 0, 0)


def _scene(path, h, w, box, colour=RED):
    """Grey image with a filled rectangle ``box`` (x1, y1, x2, y2) in ``colour`` (RGB)."""
    img = np.full((h, w, 3), 128, dtype=np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = colour
    cv2.imwrite(str(path), img[:, :, ::-1])
    return str(path)


def _record(path, h, w, boxes, pids, image_id=None):
    return {
        "file_name": path,
        "image_id": image_id or path.split("/")[-1],
        "height": h,
        "width": w,
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "pids": np.asarray(pids, dtype=np.int64),
        "camid": -1,
        "dataset": "test",
    }


def _red_extent(image):
    """(x1, y1, x2, y2) of the reddish pixels of a (3, H, W) 0-255 tensor."""
    r, g = image[0], image[1]
    ys, xs = torch.where((r > 200) & (g < 60))
    return xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1


@pytest.mark.parametrize(
    "size,limits,expected",
    [
        ((480, 640), (600, 1000), (600, 800)),  # shorter side -> 600
        ((300, 1000), (600, 1000), (300, 1000)),  # 600/300 = 2 would make the long side 2000
        ((600, 960), (640, 960), (600, 960)),  # longer side already at the limit
        ((100, 50), (60, 100), (100, 50)),  # min(60/50, 100/100) = 1
        ((40, 60), (80, 200), (80, 120)),
    ],
)
def test_resize_rule(size, limits, expected):
    assert scene_resize_shape(*size, *limits) == expected


def test_resize_rejects_bad_sizes():
    with pytest.raises(ValueError, match="MIN_SIZE"):
        scene_resize_shape(10, 10, 0, 100)


def test_mapper_resizes_image_and_boxes(tmp_path):
    box = (10, 4, 22, 30)
    path = _scene(tmp_path / "a.png", 40, 60, box)
    rec = _record(path, 40, 60, [box], [7])
    rec["query_box"] = np.array(box, dtype=np.float32)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in rec.items()}
    out = SceneDatasetMapper(min_size=80, max_size=200)(rec)
    assert out["image"].shape == (3, 80, 120) and out["image"].dtype == torch.float32
    assert float(out["image"].max()) <= 255 and float(out["image"].min()) >= 0
    torch.testing.assert_close(out["gt_boxes"], torch.tensor([[20.0, 8.0, 44.0, 60.0]]))
    assert out["gt_pids"].tolist() == [7]
    # the red rectangle sits where the resized box says (bilinear border: +-1 px)
    ext = _red_extent(out["image"])
    assert np.allclose(ext, out["gt_boxes"][0].tolist(), atol=1)
    # original size, boxes and query box are kept; the record is not modified
    assert (out["height"], out["width"]) == (40, 60)
    np.testing.assert_array_equal(out["boxes"], [box])
    np.testing.assert_array_equal(out["query_box"], box)
    for k, v in before.items():
        assert np.array_equal(rec[k], v) if isinstance(v, np.ndarray) else rec[k] == v
    assert "image" not in rec


def test_mapper_flips_image_and_boxes(tmp_path):
    box = (5, 2, 15, 30)
    path = _scene(tmp_path / "b.png", 32, 48, box)
    rec = _record(path, 32, 48, [box, (30, 0, 48, 10)], [1, -1])
    out = SceneDatasetMapper(min_size=32, max_size=48, flip_prob=1.0)(rec)
    expected = torch.tensor([[48 - 15, 2, 48 - 5, 30], [0, 0, 18, 10]], dtype=torch.float32)
    torch.testing.assert_close(out["gt_boxes"], expected)
    assert _red_extent(out["image"]) == (33, 2, 43, 30)
    assert out["gt_pids"].tolist() == [1, -1]
    no_flip = SceneDatasetMapper(min_size=32, max_size=48, flip_prob=0.0)(rec)
    assert _red_extent(no_flip["image"]) == box


def test_mapper_flip_is_a_function_of_the_seed(tmp_path):
    path = _scene(tmp_path / "c.png", 32, 32, (0, 0, 8, 8))
    rec = _record(path, 32, 32, [(0, 0, 8, 8)], [0])
    mapper = SceneDatasetMapper(min_size=32, max_size=32, flip_prob=0.5)
    flips = [float(mapper(rec, seed=s)["gt_boxes"][0, 0]) > 0 for s in range(16)]
    assert flips == [float(mapper(rec, seed=s)["gt_boxes"][0, 0]) > 0 for s in range(16)]
    assert 0 < sum(flips) < 16


def test_mapper_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "missing.jpg")
    rec = _record(missing, 10, 10, [], [])
    with pytest.raises(ImageReadError, match="missing.jpg"):
        SceneDatasetMapper(min_size=10, max_size=10)(rec)
    assert SceneDatasetMapper(min_size=10, max_size=10, skip_corrupt=True)(rec) is None
    path = _scene(tmp_path / "d.png", 10, 10, (0, 0, 2, 2))
    with pytest.raises(ValueError, match="2 boxes but 1 pids"):
        SceneDatasetMapper(min_size=10, max_size=10)(_record(path, 10, 10, [[0, 0, 1, 1]] * 2, [0]))


def test_batch_scene_images_pads_variable_sizes():
    mean = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1)
    std = torch.tensor([2.0, 4.0, 5.0]).view(3, 1, 1)
    a = torch.full((3, 40, 70), 50.0)
    b = torch.full((3, 65, 33), 90.0)
    batch = batch_scene_images([a, b], mean, std, 32)
    assert batch.tensors.shape == (2, 3, 96, 96)
    assert batch.image_sizes == [(40, 70), (65, 33)]
    torch.testing.assert_close(batch.tensors[0, :, :40, :70], ((a - mean) / std))
    torch.testing.assert_close(batch.tensors[1, :, :65, :33], ((b - mean) / std))
    assert (
        batch.tensors[0, :, 40:].abs().sum() == 0 and batch.tensors[1, :, :, 33:].abs().sum() == 0
    )
    assert a.max() == 50  # inputs untouched


# --------------------------------------------------------------------------- loaders
@pytest.fixture
def scene_sets(tmp_path):
    """Two tiny registered train sets (variable image sizes), a gallery and a query set."""
    tag = uuid.uuid4().hex[:8]
    sizes = [(40, 60), (50, 40), (36, 64), (48, 48), (40, 56)]
    recs = []
    for i, (h, w) in enumerate(sizes):
        path = _scene(tmp_path / f"s{i}.png", h, w, (2, 2, 12, 20))
        recs.append(_record(path, h, w, [(2, 2, 12, 20), (14, 1, 24, 30)], [i % 3, -1]))
    empty = _record(recs[0]["file_name"], 40, 60, np.zeros((0, 4)), [], image_id="empty.png")
    names = {
        "a": f"scenes_{tag}_a",
        "b": f"scenes_{tag}_b",
        "gallery": f"scenes_{tag}_gallery",
        "query": f"scenes_{tag}_query",
    }
    queries = [
        dict(recs[1], query_box=np.array([2, 2, 12, 20], np.float32), query_pid=1),
        dict(recs[3], query_box=np.array([14, 1, 24, 30], np.float32), query_pid=5),
    ]
    DatasetCatalog.register(names["a"], lambda: [dict(r) for r in recs[:3]] + [empty])
    DatasetCatalog.register(names["b"], lambda: [dict(r) for r in recs[3:]])
    DatasetCatalog.register(names["gallery"], lambda: [dict(r) for r in recs])
    DatasetCatalog.register(names["query"], lambda: [dict(q) for q in queries])
    yield names
    for n in names.values():
        DatasetCatalog.remove(n)


def _cfg(names, **kw):
    cfg = add_all_configs(get_cfg())
    cfg.DATASETS.TRAIN = [names["a"], names["b"]]
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = 40, 64
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 40, 64
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.SEARCH.IMS_PER_BATCH = 2
    cfg.SEED = 3
    cfg.merge_from_list(sum(([k, v] for k, v in kw.items()), []))
    return cfg


def test_train_records_offset_pids_and_drop_empty(scene_sets):
    recs = get_scene_train_records(_cfg(scene_sets))
    assert len(recs) == 5  # the image without boxes is dropped
    assert [r["dataset_index"] for r in recs] == [0, 0, 0, 1, 1]
    # set a has pids {0, 1, 2} -> 3 ids; set b's pids 0, 1 become 3, 4; unlabelled stays -1
    assert [r["pids"].tolist() for r in recs] == [[0, -1], [1, -1], [2, -1], [3, -1], [4, -1]]


def _key(batch):
    return [(b["image_id"], tuple(b["gt_boxes"][0].tolist())) for b in batch]


def test_train_loader_batches_and_exact_resume(scene_sets):
    cfg = _cfg(scene_sets)
    loader = build_scene_train_loader(cfg)
    assert loader.num_pids_per_domain == [5] and loader.batch_size == 2
    it = iter(loader)
    run = [next(it) for _ in range(6)]
    shapes = {tuple(b["image"].shape) for batch in run for b in batch}
    assert len(shapes) > 1  # variable image sizes, no resizing to a common size
    for batch in run:
        assert len(batch) == 2
        for b in batch:
            h, w = b["image"].shape[-2:]
            assert min(h, w) == 40 or max(h, w) == 64
            assert b["gt_boxes"].shape == (2, 4) and b["gt_pids"].shape == (2,)
    # every record appears once per pass over the data (5 records -> 10 draws = 2 epochs)
    ids = [b["image_id"] for batch in run[:5] for b in batch]
    assert sorted(ids) == sorted([f"s{i}.png" for i in range(5)] * 2)
    # flips happen and batch k depends only on (seed, k)
    assert len({k for batch in run for k in _key(batch)}) > 5
    resumed = build_scene_train_loader(cfg)
    resumed.set_start_iter(4)
    it2 = iter(resumed)
    assert [_key(next(it2)) for _ in range(2)] == [_key(b) for b in run[4:6]]
    other = iter(build_scene_train_loader(_cfg(scene_sets, SEED=4)))
    assert [_key(next(other)) for _ in range(6)] != [_key(b) for b in run]


def test_batch_sampler_ranks_split_the_global_batch():
    glob = SceneTrainBatchSampler(7, 4, seed=1, rank=0, world_size=1)
    streams = [iter(SceneTrainBatchSampler(7, 4, seed=1, rank=r, world_size=2)) for r in range(2)]
    for k in range(5):
        want = glob.global_batch(k)
        assert len(set(want)) == 4 or k in (1, 3)  # batches 1 and 3 cross an epoch
        assert next(streams[0]) + next(streams[1]) == want
    with pytest.raises(ValueError, match="divisible"):
        SceneTrainBatchSampler(7, 3, seed=1, rank=0, world_size=2)


def test_test_and_query_loaders_keep_order(scene_sets):
    cfg = _cfg(scene_sets)
    gallery = [b for batch in build_scene_test_loader(cfg, scene_sets["gallery"]) for b in batch]
    assert [b["image_id"] for b in gallery] == [f"s{i}.png" for i in range(5)]
    assert all(torch.equal(b["gt_pids"], torch.as_tensor(b["pids"])) for b in gallery)
    # aligned with an evaluator's query list (reversed order here)
    queries = [
        {"image_id": "s3.png", "query_pid": 5, "query_box": [14, 1, 24, 30]},
        {"image_id": "s1.png", "query_pid": 1, "query_box": [2, 2, 12, 20]},
    ]
    loader = build_scene_query_loader(cfg, scene_sets["query"], queries)
    got = [b for batch in loader for b in batch]
    assert [(b["image_id"], b["query_index"]) for b in got] == [("s3.png", 0), ("s1.png", 1)]
    np.testing.assert_array_equal(got[0]["query_box"], [14, 1, 24, 30])  # original coordinates
    with pytest.raises(KeyError, match="not in the query set"):
        build_scene_query_loader(cfg, scene_sets["query"], [dict(queries[0], query_pid=9)])


def test_search_dataset_pair():
    assert search_dataset_pair("prw_query") == ("prw_gallery", "prw_query")
    assert search_dataset_pair("cuhk_sysu_gallery") == ("cuhk_sysu_gallery", "cuhk_sysu_query")
    with pytest.raises(ValueError, match="person-search set"):
        search_dataset_pair("market1501_test")
