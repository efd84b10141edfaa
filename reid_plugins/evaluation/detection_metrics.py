"""Box-level metrics of person search: the CUHK-SYSU/PRW IoU rule, box IoU, AP, detection.

Pure functions over numpy arrays. All boxes are ``x1, y1, x2, y2`` in original image pixels
(continuous coordinates, no ``+1``); metrics are fractions in ``[0, 1]``.

* :func:`iou_threshold`: a ground-truth box of width ``w`` and height ``h`` is matched by a
  detection with ``IoU >= min(0.5, w*h / ((w+10)*(h+10)))``.
* :func:`average_precision`: sklearn's step-wise (non-interpolated) AP, ties grouped.
* :func:`detection_recall_ap`: person-detection recall and AP, by default with the matching
  rule of the OIM/SeqNet reference evaluation (``matching="greedy"``: the former rule).

The search protocols that use them are in :mod:`reid_plugins.evaluation.search_metrics`.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

__all__ = [
    "iou_threshold",
    "box_iou",
    "average_precision",
    "detection_recall_ap",
    "DETECTION_MATCHING",
]


def iou_threshold(w, h):
    """CUHK-SYSU/PRW matching threshold ``min(0.5, w*h / ((w+10)*(h+10)))`` for a gt ``w x h``.

    Accepts scalars (returns a float) or arrays (element-wise).
    """
    w = np.asarray(w, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    thr = np.minimum(0.5, w * h / ((w + 10.0) * (h + 10.0)))
    return float(thr) if thr.ndim == 0 else thr


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``a (N,4)`` and ``b (M,4)`` x1y1x2y2 boxes -> ``(N, M)`` float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(y_true, y_score) -> float:
    """Non-interpolated AP, equal to ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds (tied scores form
    one threshold). Returns 0.0 when ``y_true`` has no positive.
    """
    y_true = np.asarray(y_true).ravel().astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"average_precision: y_true {y_true.shape} vs y_score {y_score.shape}")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("average_precision: y_score contains NaN or inf")
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-y_score, kind="mergesort")
    s, t = y_score[order], y_true[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each tie group
    tps = np.cumsum(t)[last]
    precision = tps / (last + 1.0)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


DETECTION_MATCHING = ("standard", "greedy")


def _standard_image(gt: np.ndarray, d: np.ndarray, iou_thresh: float) -> np.ndarray:
    """True-positive flags of the detections ``d`` (in their given order) of one image under
    the standard rule: ``j`` is a TP iff its best-IoU gt ``g`` has ``IoU >= iou_thresh`` and
    ``j`` is ``g``'s best-IoU detection (first index on IoU ties; scores play no part)."""
    if gt.shape[0] == 0 or d.shape[0] == 0:
        return np.zeros(d.shape[0], dtype=bool)
    ious = box_iou(gt, d[:, :4]).astype(np.float32)  # (gt, det); float32 as the reference
    best_gt = np.argmax(ious, axis=0)
    best_det = np.argmax(ious, axis=1)
    cols = np.arange(d.shape[0])
    return (ious[best_gt, cols] >= iou_thresh) & (best_det[best_gt] == cols)


def _greedy_image(gt: np.ndarray, d: np.ndarray, iou_thresh: float, labelled: np.ndarray):
    """``(is_tp, counted)`` of the detections ``d`` of one image under greedy matching: visited
    by decreasing score (stable), each takes the free gt with the highest IoU if it is
    ``>= iou_thresh``; one matched to an unlabelled gt is not counted (ignore region)."""
    order = np.argsort(-d[:, 4], kind="stable")
    ious = box_iou(d[order, :4], gt)
    free = np.ones(gt.shape[0], bool)
    is_tp = np.zeros(d.shape[0], bool)
    counted = np.ones(d.shape[0], bool)
    for r, j in enumerate(order):
        cand = np.where(free, ious[r], -1.0)
        m = int(np.argmax(cand)) if gt.shape[0] else -1
        if m >= 0 and cand[m] >= iou_thresh:
            free[m] = False
            is_tp[j] = labelled[m]
            counted[j] = labelled[m]
    return is_tp, counted


def detection_recall_ap(
    gt_boxes: Mapping[str, np.ndarray],
    dets: Mapping[str, np.ndarray],
    *,
    iou_thresh: float = 0.5,
    det_thresh: float = 0.0,
    gt_pids: Optional[Mapping[str, np.ndarray]] = None,
    labeled_only: bool = False,
    matching: str = "standard",
) -> Dict[str, float]:
    """Person-detection recall and AP of the detections with ``score >= det_thresh``.

    ``matching="standard"`` (default) is the rule of the evaluation released with OIM
    (Xiao et al., "Joint Detection and Identification Feature Learning for Person Search",
    CVPR 2017) and used unchanged by later person-search code (NAE, SeqNet, COAT): in each
    image, detection ``j`` is a true positive iff its best-IoU gt box ``g`` has
    ``IoU >= iou_thresh`` **and** ``j`` is ``g``'s best-IoU detection, whatever the scores
    (IoU ties go to the first gt / detection in the given order; IoUs are float32). With
    ``labeled_only`` the unlabelled gt boxes (negative pid) are removed: a detection on an
    unlabelled person is then a false positive, and an image without labelled person is left
    out entirely (its detections are not counted).

    ``matching="greedy"`` (the project's former rule): detections are visited by decreasing
    score (stable) and each takes the still-unmatched gt box with the highest IoU if it is
    ``>= iou_thresh``; with ``labeled_only`` the unlabelled gt boxes are ignore regions (a
    detection matched to one is neither a TP nor a FP).

    Both: ``recall = #TP / #gt`` and ``AP = average_precision(y_true, y_score) * recall`` over
    the detections of all images (sklearn's ``average_precision_score`` times the recall, as
    the reference computes it).

    Returns:
        ``{"recall", "AP", "num_gt", "num_tp", "num_det"}`` (fractions in [0, 1]).
    """
    if matching not in DETECTION_MATCHING:
        raise ValueError(f"matching must be one of {DETECTION_MATCHING}, got '{matching}'")
    if set(gt_boxes) != set(dets):
        only_gt = sorted(set(gt_boxes) - set(dets))[:5]
        only_det = sorted(set(dets) - set(gt_boxes))[:5]
        raise KeyError(
            f"detection_recall_ap: image sets differ (only gt: {only_gt}, only dets: {only_det})"
        )
    if labeled_only and gt_pids is None:
        raise ValueError("detection_recall_ap(labeled_only=True) needs gt_pids")
    y_true, y_score, n_gt = [], [], 0
    for name, gt in gt_boxes.items():
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        labelled = np.ones(gt.shape[0], bool)
        if labeled_only:
            labelled = np.asarray(gt_pids[name]).ravel() >= 0
            if labelled.size != gt.shape[0]:
                raise ValueError(
                    f"gt_pids['{name}'] has {labelled.size} pids for {gt.shape[0]} boxes"
                )
        d = np.asarray(dets[name], dtype=np.float64).reshape(-1, 5)
        d = d[d[:, 4] >= det_thresh]
        if matching == "standard":
            if labeled_only:
                if not labelled.any():
                    continue  # the reference skips images without labelled person
                gt = gt[labelled]
            is_tp = _standard_image(gt, d, iou_thresh)
            counted = np.ones(d.shape[0], bool)
            n_gt += gt.shape[0]
        else:
            is_tp, counted = _greedy_image(gt, d, iou_thresh, labelled)
            n_gt += int(labelled.sum())
        y_true.append(is_tp[counted])
        y_score.append(d[counted, 4])
    y_true = np.concatenate(y_true) if y_true else np.zeros(0, bool)
    y_score = np.concatenate(y_score) if y_score else np.zeros(0)
    n_tp = int(y_true.sum())
    recall = n_tp / n_gt if n_gt else 0.0
    ap = average_precision(y_true, y_score) * recall if n_tp else 0.0
    return {"recall": recall, "AP": ap, "num_gt": n_gt, "num_tp": n_tp, "num_det": len(y_true)}
