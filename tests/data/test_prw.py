"""PRW parsers on tiny fixtures in the real layout."""

import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog
from reid_plugins.data.datasets.prw import (
    UNLABELED_PID,
    load_prw_annotation,
    load_prw_gallery,
    load_prw_query,
    load_prw_query_info,
    load_prw_train,
    prw_camid,
)

# frame -> (width, height, {key: rows (pid, x, y, w, h)})
FRAMES = {
    "c1s1_000025": (64, 48, {"box_new": [[5, -3, 4, 20, 30], [-2, 30, 10, 15, 30]]}),
    "c2s1_000050": (60, 40, {"anno_file": [[12, 1, 2, 10, 20]],
                             "anno_previous": [[99, 0, 0, 5, 5]]}),
    "c3s2_000100": (70, 50, {"anno_previous": [[5, 10, -2, 12, 30], [-2, 40, 5, 10, 20]]}),
    "c6s1_000125": (66, 44, {"box_new": [[8, 2, 2, 9, 18]], "anno_file": [[1, 0, 0, 3, 3]]}),
    "c1s1_000150": (62, 46, {"box_new": [[8, 20, 5, 10, 25], [5, 1, 1, 8, 16]]}),
}  # fmt: skip
TRAIN = ["c1s1_000025", "c2s1_000050", "c3s2_000100"]
TEST = ["c6s1_000125", "c1s1_000150"]
QUERY_INFO = "8 2 2 9 18 c6s1_000125\r\n5 -1.5 1 8 16 c1s1_000150\r\n\r\n"


def _cell(values):
    arr = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        arr[i, 0] = v
    return arr


def write_prw(root):
    for d in ("frames", "annotations"):
        os.makedirs(os.path.join(root, d))
    for name, (w, h, keys) in FRAMES.items():
        Image.new("RGB", (w, h), (30, 60, 90)).save(os.path.join(root, "frames", name + ".jpg"))
        mdict = {k: np.array(v, dtype=np.float64) for k, v in keys.items()}
        scipy.io.savemat(os.path.join(root, "annotations", name + ".jpg.mat"), mdict)
    scipy.io.savemat(os.path.join(root, "frame_train.mat"), {"img_index_train": _cell(TRAIN)})
    scipy.io.savemat(os.path.join(root, "frame_test.mat"), {"img_index_test": _cell(TEST)})
    with open(os.path.join(root, "query_info.txt"), "w", newline="") as f:
        f.write(QUERY_INFO)
    return root


@pytest.fixture
def prw(tmp_path):
    return write_prw(str(tmp_path / "prw"))


def test_annotation_keys_clipping_and_unlabelled(prw):
    anno = os.path.join(prw, "annotations")
    boxes, pids = load_prw_annotation(os.path.join(anno, "c1s1_000025.jpg.mat"))
    # x = -3, w = 20 -> x1 = 0 (clipped), x2 = 17; pid -2 -> -1
    np.testing.assert_array_equal(boxes, [[0, 4, 17, 34], [30, 10, 45, 40]])
    assert boxes.dtype == np.float32 and pids.tolist() == [5, UNLABELED_PID]
    # no box_new: anno_file is preferred over anno_previous
    _, pids = load_prw_annotation(os.path.join(anno, "c2s1_000050.jpg.mat"))
    assert pids.tolist() == [12]
    boxes, pids = load_prw_annotation(os.path.join(anno, "c3s2_000100.jpg.mat"))
    np.testing.assert_array_equal(boxes[0], [10, 0, 22, 28])  # only anno_previous; y clipped
    _, pids = load_prw_annotation(os.path.join(anno, "c6s1_000125.jpg.mat"))
    assert pids.tolist() == [8]  # box_new wins over anno_file


@pytest.mark.parametrize("shape", [(1, 0), (0, 0), (0, 5)])
def test_empty_annotation_arrays(tmp_path, shape):
    # a frame without person: 1x0 in the real files, 0x0 / 0x5 from other writers
    path = str(tmp_path / "c1s1_000001.jpg.mat")
    scipy.io.savemat(path, {"box_new": np.zeros(shape)})
    assert scipy.io.loadmat(path)["box_new"].shape == shape
    boxes, pids = load_prw_annotation(path)
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert pids.shape == (0,) and pids.dtype == np.int64


def test_camera_from_frame_name():
    assert prw_camid("c1s1_000025") == 0
    assert prw_camid("c6s4_012345.jpg") == 5
    with pytest.raises(ValueError, match="frame_7.jpg"):
        prw_camid("frame_7.jpg")


def test_train_gallery_query_splits(prw):
    train = load_prw_train(prw)
    assert [r["image_id"] for r in train] == [f + ".jpg" for f in TRAIN]
    # raw ids 5, 12 relabelled 0, 1 (increasing raw id); unlabelled stay -1
    assert [r["pids"].tolist() for r in train] == [[0, -1], [1], [0, -1]]
    assert [r["camid"] for r in train] == [0, 1, 2]
    assert (train[0]["height"], train[0]["width"]) == (48, 64)
    assert train[0]["file_name"] == os.path.join(prw, "frames", "c1s1_000025.jpg")
    gallery = load_prw_gallery(prw)
    assert [r["pids"].tolist() for r in gallery] == [[8], [8, 5]]  # raw test ids
    assert [r["camid"] for r in gallery] == [5, 0]
    queries = load_prw_query(prw)
    assert [q["query_pid"] for q in queries] == [8, 5]
    np.testing.assert_array_equal(queries[0]["query_box"], [2, 2, 11, 20])
    np.testing.assert_allclose(queries[1]["query_box"], [0, 1, 6.5, 17])  # x = -1.5 clipped
    assert queries[1]["image_id"] == "c1s1_000150.jpg" and queries[1]["camid"] == 0
    assert queries[1]["pids"].tolist() == [8, 5] and queries[1]["dataset"] == "prw_query"


def test_query_info_parsing_and_errors(tmp_path):
    path = str(tmp_path / "query_info.txt")
    with pytest.raises(FileNotFoundError, match="query_info.txt"):
        load_prw_query_info(path)
    with open(path, "w") as f:
        f.write("3 1 2 3 4 c1s1_000001.jpg\n3 1 2 x 4 c1s1_000002\n")
    with pytest.raises(ValueError, match=r"query_info\.txt:2: malformed line"):
        load_prw_query_info(path)
    with open(path, "w") as f:
        f.write("3 1 2 3 4 c1s1_000001.jpg\n")
    (q,) = load_prw_query_info(path)
    assert q["pid"] == 3 and q["frame"] == "c1s1_000001"
    np.testing.assert_array_equal(q["box"], [1, 2, 4, 6])


def test_missing_and_malformed_files_are_named(prw):
    mat = os.path.join(prw, "annotations", "c1s1_000150.jpg.mat")
    scipy.io.savemat(mat, {"boxes": np.zeros((1, 5))})
    with pytest.raises(ValueError, match=r"c1s1_000150\.jpg\.mat has none of the keys"):
        load_prw_gallery(prw)
    scipy.io.savemat(mat, {"box_new": np.zeros((2, 4))})
    with pytest.raises(ValueError, match=r"'box_new' must be n x 5"):
        load_prw_gallery(prw)
    os.remove(mat)
    with pytest.raises(FileNotFoundError, match=r"c1s1_000150\.jpg\.mat"):
        load_prw_gallery(prw)
    os.remove(os.path.join(prw, "frame_train.mat"))
    with pytest.raises(FileNotFoundError, match=r"frame_train\.mat"):
        load_prw_train(prw)
    scipy.io.savemat(os.path.join(prw, "frame_train.mat"), {"frames": _cell(TRAIN)})
    with pytest.raises(ValueError, match="has no variable 'img_index_train'"):
        load_prw_train(prw)
    os.remove(os.path.join(prw, "frames", "c6s1_000125.jpg"))
    with pytest.raises(FileNotFoundError, match=r"c6s1_000125\.jpg"):
        load_prw_query(prw)


def test_registered_lazily_with_metadata(tmp_path, monkeypatch):
    write_prw(str(tmp_path / "prw"))
    monkeypatch.setenv("REID_DATASETS", str(tmp_path))
    assert len(DatasetCatalog.get("prw_train")) == 3
    meta = MetadataCatalog.get("prw_train")
    assert (meta.num_pids, meta.num_cams, meta.num_boxes, meta.num_labeled_boxes) == (2, 3, 5, 3)
    assert meta.evaluator_type == "prw"
    DatasetCatalog.get("prw_query")
    assert MetadataCatalog.get("prw_query").num_queries == 2
