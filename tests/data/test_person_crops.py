"""Person crops of scene datasets in the Market layout (TDN's teacher training set)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog
from reid_plugins.data.datasets.market1501 import load_market_style
from reid_plugins.data.person_crops import (
    build_person_crops,
    crop_person,
    crops_dir,
    register_person_crops,
)

COLOURS = {0: (200, 30, 30), 1: (30, 60, 170), -1: (20, 200, 20), 5: (240, 240, 0)}


def _scene(tmp_path, name, persons, size=(60, 80)):
    """An image with one solid rectangle per (box, pid), the pid's colour."""
    img = np.full((size[0], size[1], 3), 128, np.uint8)
    for (x1, y1, x2, y2), pid in persons:
        img[y1:y2, x1:x2] = COLOURS[pid]
    path = tmp_path / name
    Image.fromarray(img).save(path)  # PNG: lossless colours
    boxes = np.array([b for b, _ in persons], np.float32).reshape(-1, 4)
    pids = np.array([p for _, p in persons], np.int64)
    return dict(file_name=str(path), image_id=name, height=size[0], width=size[1],
                boxes=boxes, pids=pids, camid=-1, dataset="toy")  # fmt: skip


@pytest.fixture
def toy_scenes(tmp_path):
    prefix = "toy_crops_scenes"
    a = _scene(tmp_path, "a.png", [((5, 5, 25, 45), 0), ((40, 10, 60, 50), -1)])
    b = _scene(tmp_path, "b.png", [((10, 2, 30, 50), 0), ((50, 5, 70, 55), 1)])
    b["camid"] = 2  # a known camera -> c3
    q = _scene(tmp_path, "q.png", [((5, 5, 25, 45), 5), ((40, 5, 60, 45), 1)])
    g = _scene(tmp_path, "g.png", [((10, 10, 30, 50), 5), ((50, 0, 70, 40), -1)])
    query = [dict(q, query_box=np.array([5, 5, 25, 45], np.float32), query_pid=5)]
    sets = {"train": [a, b], "query": query, "gallery": [g, q]}
    for split, recs in sets.items():
        name = f"{prefix}_{split}"
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda recs=recs: recs)
    return prefix


def test_crop_person_resizes_and_clips():
    img = np.zeros((10, 20, 3), np.uint8)
    img[2:8, 4:8] = 255
    crop = crop_person(img, [4, 2, 8, 8], (12, 6))
    assert crop.shape == (12, 6, 3) and crop.min() == 255
    assert crop_person(img, [-5, -5, 30, 30], (4, 4)).shape == (4, 4, 3)  # clipped
    assert crop_person(img, [25, 2, 30, 8], (4, 4)) is None  # outside the image


def test_build_crops_market_layout_read_by_the_market_loader(toy_scenes, tmp_path):
    root = str(tmp_path / "root")
    out = build_person_crops(toy_scenes, root, size=(32, 16), progress=False)
    assert out == crops_dir(root, toy_scenes)
    names = {f: sorted(os.listdir(os.path.join(out, f)))
             for f in ("bounding_box_train", "query", "bounding_box_test")}  # fmt: skip
    # train: 3 labelled boxes (the unlabelled one is skipped); pid + 1; camera c1 / c3
    assert names["bounding_box_train"] == [
        "0001_c1s1_000000_00.jpg", "0001_c3s1_000001_00.jpg", "0002_c3s1_000002_00.jpg"
    ]  # fmt: skip
    # query c1; gallery c2 (CUHK-style pseudo camera) without the query's own box
    assert names["query"] == ["0006_c1s1_000000_00.jpg"]
    assert names["bounding_box_test"] == ["0002_c2s1_000001_00.jpg", "0006_c2s1_000000_00.jpg"]
    crop = np.asarray(
        Image.open(os.path.join(out, "bounding_box_train", names["bounding_box_train"][2]))
    )
    assert crop.shape == (32, 16, 3)
    assert np.abs(crop.reshape(-1, 3).mean(0) - COLOURS[1]).max() < 6  # pid 1's colour, jpeg
    train = load_market_style(out, "train", dataset_name="x")
    assert sorted((r["pid"], r["camid"]) for r in train) == [(0, 0), (0, 2), (1, 2)]
    test = load_market_style(out, "test", dataset_name="x")
    assert sum(r["is_query"] for r in test) == 1 and len(test) == 3
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["params"]["size"] == [32, 16]
    assert manifest["counts"]["bounding_box_train"] == {"images": 3, "ids": 2}
    # same parameters: reused; other parameters: rebuilt
    stamp = os.path.getmtime(os.path.join(out, "manifest.json"))
    assert build_person_crops(toy_scenes, root, size=(32, 16), progress=False) == out
    assert os.path.getmtime(os.path.join(out, "manifest.json")) == stamp
    build_person_crops(toy_scenes, root, size=(16, 8), splits=["train"], progress=False)
    assert not os.listdir(os.path.join(out, "query"))


def test_registered_crop_sets_load_through_the_catalog(toy_scenes, tmp_path, monkeypatch):
    monkeypatch.setenv("REID_DATASETS", str(tmp_path / "root"))
    names = register_person_crops([toy_scenes])
    assert names == [f"{toy_scenes}_crops_train", f"{toy_scenes}_crops_test"]
    train = DatasetCatalog.get(names[0])  # built on first use (256 x 128)
    assert len(train) == 3 and {r["pid"] for r in train} == {0, 1}
    assert MetadataCatalog.get(names[0]).num_pids == 2
    assert Image.open(train[0]["file_name"]).size == (128, 256)
    for n in names:
        DatasetCatalog.remove(n)


def test_bad_arguments(toy_scenes, tmp_path):
    with pytest.raises(ValueError, match="splits"):
        build_person_crops(toy_scenes, str(tmp_path), splits=["val"])
    with pytest.raises(ValueError, match="size"):
        build_person_crops(toy_scenes, str(tmp_path), size=(4, 2))
    with pytest.raises(KeyError):
        build_person_crops("no_such_scenes", str(tmp_path))
