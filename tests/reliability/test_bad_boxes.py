"""Boxes outside the image and zero-size boxes in person-search data and evaluation.

Documented handling (README "Reliability"):

* parsers: CUHK-SYSU boxes with ``w <= 0`` or ``h <= 0`` are skipped; PRW boxes are clipped
  at 0 (negative coordinates) and skipped when left with zero width or height; a zero-size
  *query* box is an error naming the file (and line). Boxes beyond the right/bottom border
  are kept as annotated (the parsers do not clip to the image size).
* training: the scene mapper clamps every box to the image, so a box wholly outside becomes
  zero-size, and the detector's targets drop zero-size boxes.
* evaluation: a zero-size query box or zero-size ground truth of a searched person is an
  error naming the query / image (its IoU threshold would be 0: any detection would match);
  in detection recall a zero-size or outside gt box is never matched (a miss).
"""

import os
import shutil

import numpy as np
import pytest
import scipy.io
import torch

from reid_plugins.data.datasets.cuhk_sysu import (
    load_cuhk_sysu_gallery,
    load_cuhk_sysu_query,
    load_cuhk_sysu_train,
)
from reid_plugins.data.datasets.prw import load_prw_annotation, load_prw_query_info
from reid_plugins.data.scene_mapper import SceneDatasetMapper
from reid_plugins.data.synthetic_scenes import generate_synthetic_scenes
from reid_plugins.evaluation.person_search_evaluation import PersonSearchEvaluator
from reid_plugins.evaluation.search_metrics import (
    detection_recall_ap,
    iou_threshold,
    search_cuhk_sysu,
    search_prw,
)
from reid_plugins.modeling.person_search.detector import gt_targets
from tests._testing import write_tiny_image


# ----------------------------------------------------------------------------- parsers
def test_prw_annotation_clips_and_drops_degenerate_boxes(tmp_path):
    rows = np.array(
        [
            [-2, -5, 10, 50, 40],  # unlabelled, starts left of the image: clipped to x1 = 0
            [3, 10, 10, 0, 20],  # zero width: dropped
            [4, 10, 10, 20, -3],  # negative height: dropped
            [5, -60, 5, 50, 20],  # wholly left of the image: zero width after clipping
            [6, 100, 5, 20, 20],  # beyond the right border of a 64-px image: kept as is
            [7, 1, 2, 3, 4],
        ],
        dtype=np.float64,
    )
    path = tmp_path / "c1s1_000001.jpg.mat"
    scipy.io.savemat(path, {"box_new": rows})
    boxes, pids = load_prw_annotation(str(path))
    np.testing.assert_array_equal(
        boxes, np.array([[0, 10, 45, 50], [100, 5, 120, 25], [1, 2, 4, 6]], np.float32)
    )
    np.testing.assert_array_equal(pids, [-1, 6, 7])


def test_prw_query_with_zero_size_box_names_file_and_line(tmp_path):
    path = tmp_path / "query_info.txt"
    path.write_text("5 -3 4 20 30 c1s1_000001\n6 10 10 0 30 c1s1_000002\n")
    with pytest.raises(ValueError, match=r"query_info.txt:2: query box has zero width"):
        load_prw_query_info(str(path))
    path.write_text("5 -3 4 20 30 c1s1_000001\n")
    (q,) = load_prw_query_info(str(path))
    np.testing.assert_array_equal(q["box"], [0, 4, 17, 34])  # clipped like annotations


@pytest.fixture
def cuhk_root(tmp_path):
    src = generate_synthetic_scenes(
        str(tmp_path / "gen"),
        fmt="cuhk_sysu",
        num_train_images=6,
        num_test_images=12,
        num_train_ids=3,
        num_test_ids=3,
        num_cams=2,
        image_size=(48, 64),
        appearances=(2, 3),
        max_labeled_per_image=2,
        unlabeled_per_image=(1, 1),
        progress=False,
    )
    root = tmp_path / "cuhk_sysu"
    shutil.copytree(src, root)
    return str(root)


def _all_boxes(root):
    recs = load_cuhk_sysu_train(root) + load_cuhk_sysu_gallery(root)
    return {r["image_id"]: r["boxes"] for r in recs}


def test_cuhk_sysu_skips_zero_size_boxes(cuhk_root):
    before = _all_boxes(cuhk_root)
    path = os.path.join(cuhk_root, "annotation", "Images.mat")
    m = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    img = m["Img"]
    # an unlabelled person of some image gets w = 0, another one h = -4
    changed = []
    for e in img[0]:
        boxes = e["box"]
        if boxes.shape[1] >= 2 and len(changed) < 2:
            loc = boxes[0, -1]["idlocate"]
            x, y, w, h = loc.ravel()
            boxes[0, -1]["idlocate"] = np.array(
                [[x, y, 0.0, h]] if not changed else [[x, y, w, -4.0]]
            )
            changed.append((str(e["imname"][0]), np.array([x, y, x + w, y + h], np.float32)))
    assert len(changed) == 2
    scipy.io.savemat(path, {"Img": img})
    after = _all_boxes(cuhk_root)
    for name, box in changed:
        assert len(after[name]) == len(before[name]) - 1
        assert not any(np.array_equal(b, box) for b in after[name])
    for boxes in after.values():
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])


def test_cuhk_sysu_zero_size_query_box_names_the_file(cuhk_root):
    path = os.path.join(cuhk_root, "annotation", "test", "train_test", "TestG10.mat")
    m = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    tg = m["TestG10"]
    tg[0, 1]["Query"][0, 0]["idlocate"] = np.array([[5.0, 5.0, 10.0, 0.0]])
    scipy.io.savemat(path, {"TestG10": tg})
    with pytest.raises(ValueError, match=r"TestG10.mat: TestG10\[1\].Query: query box is empty"):
        load_cuhk_sysu_query(cuhk_root)


# ----------------------------------------------------------------------------- training
def test_mapper_clamps_to_the_image_and_targets_drop_zero_size(tmp_path):
    path = write_tiny_image(tmp_path / "scene.jpg", seed=0, size=(48, 64))
    record = {
        "file_name": path,
        "height": 48,
        "width": 64,
        "boxes": np.array(
            [
                [-10, 5, 20, 30],  # starts left of the image
                [60, 40, 90, 70],  # crosses the right and bottom borders
                [70, 10, 80, 20],  # wholly right of the image
                [10, 10, 10, 30],  # zero width
                [5, 5, 25, 45],  # inside
            ],
            np.float32,
        ),
        "pids": np.array([0, 1, 2, 3, 4]),
    }
    out = SceneDatasetMapper(min_size=96, max_size=128)(record)  # resized x2
    expected = np.array(
        [[0, 5, 20, 30], [60, 40, 64, 48], [64, 10, 64, 20], [10, 10, 10, 30], [5, 5, 25, 45]],
        np.float32,
    )
    np.testing.assert_allclose(out["gt_boxes"].numpy(), expected * 2)
    np.testing.assert_array_equal(record["boxes"][0], [-10, 5, 20, 30])  # record untouched
    (boxes,), (pids,) = gt_targets([out], torch.device("cpu"))
    assert pids.tolist() == [0, 1, 4]
    assert torch.all(boxes[:, 2] > boxes[:, 0]) and torch.all(boxes[:, 3] > boxes[:, 1])


# ----------------------------------------------------------------------------- evaluation
def _dets(*rows):
    d = np.array(rows, np.float64).reshape(-1, 5)
    return d, np.tile([[1.0, 0.0]], (len(d), 1))


def test_zero_size_gt_would_match_anything_so_search_rejects_it():
    # The IoU rule's threshold min(0.5, wh/((w+10)(h+10))) is 0 for a zero-size box.
    assert iou_threshold(0.0, 40.0) == 0.0
    q = np.array([[1.0, 0.0]])
    dets = {"g1.jpg": _dets([100, 100, 150, 200, 0.9]), "q.jpg": _dets()}
    prw_ann = {
        "g1.jpg": {"boxes": np.array([[10, 10, 10, 50]]), "pids": np.array([5]), "camid": 0},
        "q.jpg": {"boxes": np.zeros((0, 4)), "pids": np.zeros(0, int), "camid": 1},
    }
    with pytest.raises(ValueError, match=r"gallery_annotations\['g1.jpg'\].*pid 5.*zero width"):
        search_prw(q, ["q.jpg"], [5], [1], dets, prw_ann)
    with pytest.raises(ValueError, match=r"query 0 \('q.jpg'\).*x2 > x1"):
        search_cuhk_sysu(q, ["q.jpg"], dets, [[("g1.jpg", [10, 10, 10, 50])]])
    # a real box far from the detection: not found, AP 0
    prw_ann["g1.jpg"]["boxes"] = np.array([[10, 10, 20, 50]])
    assert search_prw(q, ["q.jpg"], [5], [1], dets, prw_ann)["mAP"] == 0.0


def test_zero_size_query_box_is_rejected_by_the_evaluator():
    queries = [{"image_id": "q.jpg", "query_box": [5, 5, 25, 5], "query_pid": 1, "camid": 0}]
    with pytest.raises(ValueError, match=r"queries\[0\] \('q.jpg'\).*zero width or height"):
        PersonSearchEvaluator(dataset_name="x", queries=queries, protocol="prw")
    queries[0]["query_box"] = [5, 5, 25, 45]
    PersonSearchEvaluator(dataset_name="x", queries=queries, protocol="prw")


def test_detection_recall_counts_degenerate_or_outside_gt_as_missed():
    gt = {"a.jpg": np.array([[0, 0, 10, 20], [10, 10, 10, 30], [500, 500, 540, 600]])}
    dets = {
        "a.jpg": np.array(
            [[0, 0, 10, 20, 0.9], [9, 9, 11, 31, 0.8], [30, 30, 60, 90, 0.7]], np.float64
        )
    }
    res = detection_recall_ap(gt, dets, iou_thresh=0.5)
    assert res["num_gt"] == 3 and res["num_tp"] == 1 and res["num_det"] == 3
    assert res["recall"] == pytest.approx(1 / 3)
    # precision 1 up to recall 1/3 (the first detection is the only true positive)
    assert res["AP"] == pytest.approx(1 / 3)
