"""Detection recall/AP: the OIM/SeqNet reference rule (default) and the greedy switch."""

import numpy as np
import pytest

from reid_plugins.evaluation.detection_metrics import detection_recall_ap


def _reference_rule(gt_boxes, gt_pids, dets, det_thresh, iou_thresh=0.5, labeled_only=False):
    """Independent restatement of the reference ``eval_detection`` with plain loops: per image
    a gt x det table of ``IoU >= thr`` flags, cleared except at each det's best gt and each
    gt's best det; AP = sklearn's average precision of the TP flags times the recall."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    y_true, y_score, count_gt, count_tp = [], [], 0, 0
    for name in gt_boxes:
        gts = [list(b) for b in gt_boxes[name]]
        if labeled_only:
            gts = [b for b, p in zip(gts, gt_pids[name]) if p >= 0]
            if not gts:
                continue
        ds = [list(d) for d in dets[name] if d[4] >= det_thresh]
        if not ds:
            count_gt += len(gts)
            continue
        table = [[iou(g, d) >= iou_thresh for d in ds] for g in gts]
        ious = [[np.float32(iou(g, d)) for d in ds] for g in gts]
        for j in range(len(ds)):
            best = max(range(len(gts)), key=lambda i: (ious[i][j], -i))
            for i in range(len(gts)):
                table[i][j] = table[i][j] and i == best
        for i in range(len(gts)):
            best = max(range(len(ds)), key=lambda j: (ious[i][j], -j))
            for j in range(len(ds)):
                table[i][j] = table[i][j] and j == best
        for j, d in enumerate(ds):
            y_true.append(any(table[i][j] for i in range(len(gts))))
            y_score.append(d[4])
        count_tp += sum(map(sum, table))
        count_gt += len(gts)
    recall = count_tp / count_gt
    return recall, sklearn_metrics.average_precision_score(y_true, y_score) * recall


def _random_scenes(seed, n_img=12):
    rng = np.random.default_rng(seed)
    gt, pids, dets = {}, {}, {}
    for k in range(n_img):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.c_[xy, xy + rng.uniform(20, 60, (n, 2))]
        gt[k] = boxes
        pids[k] = np.where(rng.random(n) < 0.4, -1, rng.integers(0, 50, n))
        # jittered copies (several per person: duplicates) and some background boxes
        src = boxes[rng.integers(0, n, int(rng.integers(0, 3 * n)))]
        jit = src + rng.normal(0, 6, src.shape)
        xy = rng.uniform(0, 200, (int(rng.integers(0, 3)), 2))
        bg = np.c_[xy, xy + rng.uniform(20, 60, xy.shape)]
        d = np.concatenate([jit, bg])
        dets[k] = np.c_[d, rng.choice([0.005, 0.2, 0.5, 0.7, 0.9], len(d))]  # score ties
    return gt, pids, dets


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("det_thresh", [0.01, 0.5])
@pytest.mark.parametrize("labeled_only", [False, True])
def test_default_equals_reference_restatement(seed, det_thresh, labeled_only):
    gt, pids, dets = _random_scenes(seed)
    res = detection_recall_ap(
        gt, dets, det_thresh=det_thresh, gt_pids=pids, labeled_only=labeled_only
    )
    recall, ap = _reference_rule(gt, pids, dets, det_thresh, labeled_only=labeled_only)
    assert res["recall"] == pytest.approx(recall, abs=1e-12)
    assert res["AP"] == pytest.approx(ap, abs=1e-12)
    if det_thresh == 0.01:  # the data are not trivial: greedy scores the duplicates otherwise
        greedy = detection_recall_ap(
            gt, dets, det_thresh=0.01, gt_pids=pids, labeled_only=labeled_only, matching="greedy"
        )
        assert greedy["AP"] != pytest.approx(ap, abs=1e-6)


def test_two_detections_on_one_person():
    # A (score 0.9, IoU 0.9) and B (score 0.5, IoU 1.0) both cover the person. Standard: the
    # person's best-IoU detection is B, so A is a FP ranked first: AP = 1/2 * recall 1.
    # Greedy: A (higher score) takes the person, B is a FP ranked second: AP = 1.
    gt = {"a": [[0, 0, 10, 10]]}
    dets = {"a": [[0, 0, 10, 9, 0.9], [0, 0, 10, 10, 0.5]]}
    std = detection_recall_ap(gt, dets)
    assert (std["num_tp"], std["recall"], std["AP"]) == (1, 1.0, pytest.approx(0.5))
    greedy = detection_recall_ap(gt, dets, matching="greedy")
    assert (greedy["num_tp"], greedy["AP"]) == (1, pytest.approx(1.0))


def test_score_tie_and_iou_tie():
    # Identical boxes on one person: the IoU tie goes to the first detection (score 0.3),
    # whatever the scores, so the 0.9 one is the FP: precision 1/2 at recall 1.
    gt = {"a": [[0, 0, 10, 10]]}
    dets = {"a": [[0, 0, 10, 10, 0.3], [0, 0, 10, 10, 0.9]]}
    assert detection_recall_ap(gt, dets)["AP"] == pytest.approx(0.5)
    assert detection_recall_ap(gt, dets, matching="greedy")["AP"] == pytest.approx(1.0)
    # A TP and a FP with the same score form one threshold: precision 1/2 there.
    gt = {"a": [[0, 0, 10, 10]], "b": [[0, 0, 10, 10]]}
    dets = {"a": [[0, 0, 10, 10, 0.7]], "b": [[50, 50, 60, 60, 0.7]]}
    res = detection_recall_ap(gt, dets)
    assert res["recall"] == pytest.approx(0.5) and res["AP"] == pytest.approx(0.5 * 0.5)


def test_unlabelled_box():
    # Image a: a labelled person and an unlabelled one, each detected; image b: only an
    # unlabelled person, detected.
    gt = {"a": [[0, 0, 10, 10], [40, 0, 50, 10]], "b": [[0, 0, 10, 10]]}
    pids = {"a": [3, -1], "b": [-1]}
    dets = {
        "a": [[0, 0, 10, 10, 0.6], [40, 0, 50, 10, 0.9]],
        "b": [[0, 0, 10, 10, 0.8]],
    }
    full = detection_recall_ap(gt, dets, gt_pids=pids)
    assert full["recall"] == 1.0 and full["AP"] == pytest.approx(1.0)
    # standard: the unlabelled box is removed, its detection in a is a FP (0.9, ranked first);
    # image b has no labelled person and is skipped with its detection.
    std = detection_recall_ap(gt, dets, gt_pids=pids, labeled_only=True)
    assert (std["num_gt"], std["num_tp"], std["num_det"]) == (1, 1, 2)
    assert std["recall"] == 1.0 and std["AP"] == pytest.approx(0.5)
    # greedy: unlabelled boxes are ignore regions, their detections do not count
    greedy = detection_recall_ap(gt, dets, gt_pids=pids, labeled_only=True, matching="greedy")
    assert (greedy["num_gt"], greedy["num_tp"], greedy["num_det"]) == (1, 1, 1)
    assert greedy["AP"] == pytest.approx(1.0)


def test_image_without_gt_and_thresholds():
    gt = {"a": np.zeros((0, 4)), "b": [[0, 0, 10, 10]]}
    dets = {"a": [[0, 0, 10, 10, 0.95]], "b": [[0, 0, 10, 10, 0.02]]}
    assert detection_recall_ap(gt, dets, det_thresh=0.5)["recall"] == 0.0
    res = detection_recall_ap(gt, dets, det_thresh=0.01)
    assert res["recall"] == 1.0 and res["AP"] == pytest.approx(0.5)  # FP in 'a' ranks first


def test_bad_matching_name():
    with pytest.raises(ValueError, match="matching must be one of"):
        detection_recall_ap({"a": [[0, 0, 1, 1]]}, {"a": []}, matching="hungarian")
