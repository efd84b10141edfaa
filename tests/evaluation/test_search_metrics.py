"""Person-search metric maths on hand-computed toy galleries and a naive reference."""

import numpy as np
import pytest

from reid_plugins.evaluation.search_core import _ap_of_positives
from reid_plugins.evaluation.search_metrics import (
    SearchGallery,
    average_precision,
    box_iou,
    detection_recall_ap,
    iou_threshold,
    rcp_rescore,
    search_cuhk_sysu,
    search_gallery_curve,
    search_prw,
    select_context,
)

D = 8
Q = np.eye(D)[0]  # the query feature


def vec(c, j=1):
    """Unit vector with cosine ``c`` to the query (e0); the rest on axis ``j``."""
    v = np.zeros(D)
    v[0] = c
    v[j] = np.sqrt(1 - c**2)
    return v


def img(*dets):
    """Gallery entry from (box, det score, feature) triples."""
    if not dets:
        return np.zeros((0, 5)), np.zeros((0, D))
    return (
        np.array([list(b) + [s] for b, s, _ in dets], dtype=np.float32),
        np.stack([f for _, _, f in dets]),
    )


GT = [0, 0, 100, 200]
FAR = [300, 300, 400, 500]


def run(gallery, protocol, **kw):
    return search_cuhk_sysu(Q[None], ["q.jpg"], gallery, [protocol], **kw)


# --------------------------------------------------------------------------------- basics
def test_iou_threshold_rule():
    assert iou_threshold(10, 20) == pytest.approx(200 / (20 * 30))  # 0.333 for small boxes
    assert iou_threshold(100, 200) == 0.5  # 20000 / (110 * 210) = 0.87 -> capped at 0.5
    np.testing.assert_allclose(
        iou_threshold(np.array([10, 100]), np.array([20, 200])), [1 / 3, 0.5]
    )


def test_small_gt_matched_with_relaxed_iou():
    # gt 10x20; detection IoU = 80 / 200 = 0.4 >= 1/3 (but < 0.5)
    assert box_iou([[0, 0, 10, 8]], [[0, 0, 10, 20]])[0, 0] == pytest.approx(0.4)
    gallery = {"a.jpg": img(([0, 0, 10, 8], 0.9, vec(0.9)))}
    res = run(gallery, [("a.jpg", [0, 0, 10, 20])])
    assert res["mAP"] == pytest.approx(1.0) and res["top-1"] == 1.0
    gallery = {"a.jpg": img(([0, 0, 10, 5], 0.9, vec(0.9)))}  # IoU 0.25 < 1/3
    assert run(gallery, [("a.jpg", [0, 0, 10, 20])])["mAP"] == 0.0


@pytest.mark.parametrize("seed,n", [(0, 20), (1, 60), (2, 200)])  # both counting branches
def test_average_precision_matches_sklearn_with_ties(seed, n):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = np.round(rng.random(n), 1)  # many ties
    assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s))
    assert _ap_of_positives(s[y], s) == pytest.approx(average_precision(y, s))


def test_average_precision_hand_computed():
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.1]) == pytest.approx(2 / 3)  # tie
    assert average_precision([0, 0], [0.3, 0.2]) == 0.0


# ---------------------------------------------------------------------- CUHK-SYSU protocol
def test_only_the_highest_similarity_match_is_positive():
    # two detections overlap the gt: sims 0.9 and 0.8; a negative image in between (0.85)
    gallery = {
        "a.jpg": img((GT, 0.9, vec(0.9)), ([0, 0, 100, 190], 0.9, vec(0.8, 2))),
        "b.jpg": img((GT, 0.9, vec(0.85, 3))),
    }
    res = run(gallery, [("a.jpg", GT), ("b.jpg", None)])
    # ranking 0.9 (+), 0.85 (-), 0.8 (-): AP = 1; labelling both would give (1 + 2/3) / 2
    assert res["mAP"] == pytest.approx(1.0)
    flags = [t["correct"] for t in res["records"][0]["top"]]
    assert flags == [True, False, False]


def test_positive_chosen_by_similarity_not_detector_score():
    # detector prefers the 0.7-similarity box; the ranking score (similarity) decides
    gallery = {
        "a.jpg": img((GT, 0.99, vec(0.7)), ([0, 0, 100, 190], 0.6, vec(0.9, 2))),
        "c.jpg": img((GT, 0.9, vec(0.8, 3))),
    }
    res = run(gallery, [("a.jpg", GT), ("c.jpg", None)])
    assert res["mAP"] == pytest.approx(1.0)  # by detector score it would be 1/3
    assert res["top-1"] == 1.0


def test_recall_scaling_of_ap():
    # query in a, b, c; found in a (0.9) and b (0.7); c's only detection misses the box
    gallery = {
        "a.jpg": img((GT, 0.9, vec(0.9)), (FAR, 0.9, vec(0.8, 2))),
        "b.jpg": img((GT, 0.9, vec(0.7, 3))),
        "c.jpg": img((FAR, 0.9, vec(0.6, 4))),
    }
    res = run(gallery, [("a.jpg", GT), ("b.jpg", GT), ("c.jpg", GT)])
    assert res["mAP"] == pytest.approx((1 + 2 / 3) / 2 * 2 / 3)  # 5/6 * 2/3
    rec = res["records"][0]
    assert (rec["num_gt"], rec["num_found"]) == (3, 2)
    assert rec["recall_rate"] == pytest.approx(2 / 3)


def test_nothing_found_gives_zero_and_top_k():
    gallery = {"a.jpg": img((FAR, 0.9, vec(0.9))), "b.jpg": img((GT, 0.9, vec(0.1, 2)))}
    assert run(gallery, [("a.jpg", GT)])["mAP"] == 0.0
    # positive ranked 2nd: top-1 miss, top-5 hit
    res = run(gallery, [("a.jpg", None), ("b.jpg", GT)], topk=(1, 5))
    assert (res["top-1"], res["top-5"]) == (0.0, 1.0) and res["mAP"] == pytest.approx(0.5)


def test_low_score_detections_dropped_but_image_counts_in_recall():
    gallery = {
        "a.jpg": img((GT, 0.9, vec(0.9))),
        "b.jpg": img((GT, 0.4, vec(0.95, 2))),  # below det_thresh: dropped
    }
    res = run(gallery, [("a.jpg", GT), ("b.jpg", GT)], det_thresh=0.5)
    assert res["mAP"] == pytest.approx(0.5)  # AP 1 * recall 1/2
    assert all(t["image_id"] == "a.jpg" for t in res["records"][0]["top"])
    assert run(gallery, [("a.jpg", GT), ("b.jpg", GT)], det_thresh=0.3)["mAP"] == pytest.approx(1.0)


def test_no_detection_survives_the_threshold():
    gallery = {f"{k}.jpg": img(([0, 0, 10, 20], 0.2, vec(0.9))) for k in range(3)}
    lists = [[("1.jpg", [0, 0, 10, 20]), ("2.jpg", None)]]
    res = search_cuhk_sysu(Q[None], ["0.jpg"], gallery, lists)
    assert res["mAP"] == 0.0 and res["top-1"] == 0.0 and res["records"][0]["num_gt"] == 1


def test_query_image_never_in_its_gallery():
    gallery = {
        "q.jpg": img((GT, 0.9, vec(1.0))),  # the query itself
        "a.jpg": img((GT, 0.9, vec(0.6)), (FAR, 0.9, vec(0.8, 2))),
    }
    with_own = run(gallery, [("q.jpg", GT), ("a.jpg", GT)])
    without = run(gallery, [("a.jpg", GT)])
    assert with_own["mAP"] == without["mAP"] == pytest.approx(0.5)
    full = run(gallery, [("a.jpg", GT)], full_set=True)
    assert full["mAP"] == pytest.approx(0.5)
    assert {t["image_id"] for t in full["records"][0]["top"]} == {"a.jpg"}


def test_full_set_adds_all_other_images_as_negatives():
    gallery = {
        "a.jpg": img((GT, 0.9, vec(0.6))),
        "b.jpg": img((GT, 0.9, vec(0.7, 2))),  # not in the TestG list
    }
    assert run(gallery, [("a.jpg", GT)])["mAP"] == pytest.approx(1.0)
    assert run(gallery, [("a.jpg", GT)], full_set=True)["mAP"] == pytest.approx(0.5)


def test_dict_protocol_format_equals_pair_list():
    gallery = {
        "a.jpg": img((GT, 0.9, vec(0.6))),
        "b.jpg": img((GT, 0.9, vec(0.7, 2))),
        "c.jpg": img((GT, 0.9, vec(0.65, 3))),
    }
    pairs = [("a.jpg", GT), ("b.jpg", None), ("c.jpg", GT)]
    as_dict = {
        "gallery_image_ids": ["a.jpg", "b.jpg", "c.jpg"],
        "gallery_gt": {"a.jpg": GT, "c.jpg": GT},
    }
    ref = run(gallery, pairs)["mAP"]
    assert ref == pytest.approx((1 / 2 + 2 / 3) / 2)  # 0.7-, 0.65+, 0.6+
    assert run(gallery, as_dict)["mAP"] == pytest.approx(ref)
    with pytest.raises(ValueError, match="not in the gallery list"):
        run(gallery, {"gallery_image_ids": ["b.jpg"], "gallery_gt": {"a.jpg": GT}})


def test_bad_inputs_raise_clear_errors():
    gallery = {"a.jpg": img((GT, 0.9, vec(0.6)))}
    with pytest.raises(KeyError, match="no predictions"):
        run(gallery, [("a.jpg", GT), ("zzz.jpg", None)])
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        run({"a.jpg": (np.zeros((2, 4)), np.zeros((2, D)))}, [("a.jpg", GT)])
    with pytest.raises(ValueError, match="x2 > x1"):
        run(gallery, [("a.jpg", [10, 0, 5, 20])])


def test_gallery_curve_runs_each_existing_size():
    gallery = {
        "a.jpg": img((GT, 0.9, vec(0.6))),
        "b.jpg": img((GT, 0.9, vec(0.7, 2))),
    }
    curve = search_gallery_curve(
        Q[None],
        ["q.jpg"],
        gallery,
        {50: [[("a.jpg", GT)]], 100: None, 500: [[("a.jpg", GT), ("b.jpg", None)]]},
    )
    assert curve == {50: pytest.approx(1.0), 500: pytest.approx(0.5)}


# --------------------------------------------------------------------------------- PRW
def test_prw_multi_view_vs_cross_camera():
    gallery = {
        "q.jpg": img((GT, 0.9, vec(1.0))),
        "f1.jpg": img((GT, 0.9, vec(0.9))),  # same camera, contains the pid
        "f2.jpg": img((GT, 0.9, vec(0.6, 2))),  # other camera, contains the pid
        "f3.jpg": img((GT, 0.9, vec(0.8, 3))),  # other camera, someone else
    }
    ann = {
        "q.jpg": {"boxes": [GT], "pids": [7], "camid": 1},
        "f1.jpg": {"boxes": [GT], "pids": [7], "camid": 1},
        "f2.jpg": {"boxes": [GT], "pids": [7], "camid": 2},
        "f3.jpg": {"boxes": [GT], "pids": [3], "camid": 2},
    }
    args = (Q[None], ["q.jpg"], [7], [1], gallery, ann)
    multi = search_prw(*args)
    assert multi["mAP"] == pytest.approx((1 + 2 / 3) / 2)  # 0.9+, 0.8-, 0.6+
    assert multi["top-1"] == 1.0 and multi["records"][0]["num_gt"] == 2
    cross = search_prw(*args, cross_camera=True)
    assert cross["mAP"] == pytest.approx(0.5)  # 0.8-, 0.6+; f1 not in the gallery
    assert cross["top-1"] == 0.0 and cross["records"][0]["num_gt"] == 1
    assert "f1.jpg" not in {t["image_id"] for t in cross["records"][0]["top"]}


# ------------------------------------------------------------------------ detection quality
def test_detection_recall_ap_toy():
    gt = {"1": [[0, 0, 10, 10], [20, 0, 30, 10]], "2": [[0, 0, 10, 10], [50, 50, 60, 60]]}
    pids = {"1": [4, 5], "2": [-1, 6]}  # the first person of image 2 is unlabelled
    dets = {
        "1": [[0, 0, 10, 10, 0.9], [1, 0, 11, 10, 0.8], [20, 0, 30, 10, 0.7]],  # TP, dup FP, TP
        "2": [[0, 0, 10, 10, 0.95], [100, 100, 110, 110, 0.6]],  # TP (unlabelled), FP
    }
    full = detection_recall_ap(gt, dets, gt_pids=pids)
    assert full["recall"] == pytest.approx(3 / 4)
    assert full["AP"] == pytest.approx((1 + 1 + 3 / 4) / 3 * 3 / 4)
    # standard rule: the unlabelled box is removed; its detection (0.95) becomes a FP
    lab = detection_recall_ap(gt, dets, gt_pids=pids, labeled_only=True)
    assert lab["recall"] == pytest.approx(2 / 3)
    assert lab["AP"] == pytest.approx((1 / 2 + 2 / 4) / 2 * 2 / 3)
    # greedy switch: the unlabelled box is an ignore region
    lab = detection_recall_ap(gt, dets, gt_pids=pids, labeled_only=True, matching="greedy")
    assert lab["recall"] == pytest.approx(2 / 3)  # unlabelled match ignored
    assert lab["AP"] == pytest.approx((1 + 2 / 3) / 2 * 2 / 3)
    assert detection_recall_ap(gt, dets, det_thresh=0.75)["recall"] == pytest.approx(2 / 4)


def test_detection_greedy_one_to_one():
    # the higher-scoring detection takes the gt first; the second has nothing left
    gt = {"1": [[0, 0, 10, 10]]}
    dets = {"1": [[0, 0, 10, 9, 0.5], [0, 0, 10, 10, 0.9]]}
    res = detection_recall_ap(gt, dets, matching="greedy")
    assert res["num_tp"] == 1 and res["num_det"] == 2
    assert res["AP"] == pytest.approx(1.0)  # TP ranked first


# ------------------------------------------------------------------------------------ RCP
def test_rcp_equations():
    q1, q2 = np.eye(D)[5], np.eye(D)[6]
    g1 = vec(0.8)  # candidate: S_I(q, g) = 0.8
    g2 = 0.5 * q1 + np.sqrt(0.75) * np.eye(D)[7]  # S_I(q1, g2) = 0.5, S_I(q, g2) = 0
    g3 = 0.25 * q2 + np.sqrt(1 - 0.25**2) * np.eye(D)[4]  # S_I(q2, .) = 0.25 < b
    gal = np.stack([g2, g1, g3])
    r = rcp_rescore(Q, np.stack([q1, q2]), gal, b=0.3, lam=0.2)
    assert r.index == 1 and r.s_individual == pytest.approx(0.8)
    assert r.s_context == pytest.approx(0.8 * 0.5)  # only q1 passes b
    assert r.score == pytest.approx(0.8 + 0.2 * 0.4)
    assert rcp_rescore(Q, np.stack([q1, q2]), gal, b=0.6).score == pytest.approx(0.8)
    assert rcp_rescore(Q, np.stack([q1, q2]), gal, b=0.2, lam=0.5).s_context == pytest.approx(
        0.8 * 0.75
    )
    assert rcp_rescore(Q, np.zeros((0, D)), gal).score == pytest.approx(0.8)
    with pytest.raises(ValueError, match="b must be >= 0"):
        rcp_rescore(Q, q1[None], gal, b=-0.1)


def test_rcp_in_search_reranks_candidates_only():
    q1 = np.eye(D)[5]
    ctx_in_a = 0.9 * q1 + np.sqrt(1 - 0.81) * np.eye(D)[6]
    gallery = {
        "a.jpg": img((GT, 0.9, vec(0.7)), (FAR, 0.9, ctx_in_a)),  # true match + co-traveller
        "b.jpg": img((GT, 0.9, vec(0.75, 2))),  # a look-alike, alone
    }
    proto = [("a.jpg", GT), ("b.jpg", None)]
    plain = run(gallery, proto)
    assert plain["mAP"] == pytest.approx(0.5) and plain["top-1"] == 0.0
    res = run(gallery, proto, rcp=(0.3, 0.2), query_context_feats=[q1[None]])
    assert res["mAP"] == pytest.approx(1.0) and res["top-1"] == 1.0
    scores = [t["score"] for t in res["records"][0]["top"]]
    assert scores[0] == pytest.approx(0.7 + 0.2 * 0.7 * 0.9)  # candidate of a rescored
    assert scores[1] == pytest.approx(0.75)  # b: no context person found
    assert scores[2] == pytest.approx(0.0, abs=1e-6)  # a's non-candidate keeps S_I


def test_select_context_drops_query_and_low_scores():
    boxes = [GT, [0, 0, 100, 190], FAR, [500, 0, 600, 100]]
    scores = [0.9, 0.9, 0.8, 0.3]
    feats = np.eye(D)[:4]
    ctx = select_context(GT, boxes, scores, feats, det_thresh=0.5)
    np.testing.assert_array_equal(ctx, feats[2:3])


# ------------------------------------------------------- vectorised core vs naive reference
def naive_search(qf, qimgs, gallery, lists, det_thresh, rcp=None, ctxs=None, topk=(1, 5, 10)):
    """Loop-by-loop reference of the protocol."""
    qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    aps, hits = [], []
    for i, q in enumerate(qf):
        ys, ts, n_gt, n_tp = [], [], 0, 0
        for name, box in sorted(lists[i], key=lambda e: list(gallery).index(e[0])):
            if name == qimgs[i]:
                continue
            n_gt += box is not None
            dets, feats = gallery[name]
            keep = dets[:, 4] >= det_thresh
            dets, feats = dets[keep], feats[keep]
            if not len(dets):
                continue
            feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
            s = (feats.astype(np.float64) @ q).astype(np.float64)
            if rcp is not None and len(ctxs[i]):
                r = rcp_rescore(q, ctxs[i], feats, *rcp)
                s[r.index] = r.score
            t = np.zeros(len(s), bool)
            if box is not None:
                w, h = box[2] - box[0], box[3] - box[1]
                for j in np.argsort(-s, kind="stable"):
                    if box_iou(dets[j : j + 1, :4], np.array([box]))[0, 0] >= iou_threshold(w, h):
                        t[j] = True
                        n_tp += 1
                        break
            ys.extend(s), ts.extend(t)
        ys, ts = np.array(ys), np.array(ts)
        aps.append(average_precision(ts, ys) * n_tp / n_gt if n_tp else 0.0)
        order = np.argsort(-ys, kind="stable")
        hits.append([ts[order][:k].any() for k in topk])
    return float(np.mean(aps)), np.mean(hits, axis=0)


def random_scene(rng, n_img=30, d=16):
    gallery, truth = {}, {}
    for k in range(n_img):
        n = int(rng.integers(0, 6))
        x = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(10, 80, (n, 2))
        dets = np.c_[x, x + wh, rng.uniform(0.2, 1.0, n)].astype(np.float32)
        gallery[f"{k:03d}.jpg"] = (dets, rng.normal(size=(n, d)).astype(np.float32))
        # a gt box: jittered copy of a detection box (or anywhere when the image is empty)
        gt = dets[0, :4] + rng.uniform(-8, 8, 4) if n else np.array([5, 5, 40, 90.0])
        gt[2:] = np.maximum(gt[2:], gt[:2] + 5)
        truth[f"{k:03d}.jpg"] = gt
    return gallery, truth


@pytest.mark.parametrize("n_gal", [5, 30])  # sparse (by image / gather) and dense paths
@pytest.mark.parametrize("with_rcp", [False, True])
@pytest.mark.parametrize("unit", [False, True])  # features normalised by the caller or not
def test_vectorised_search_equals_naive_reference(n_gal, with_rcp, unit):
    rng = np.random.default_rng(n_gal + 7 * with_rcp)
    gallery, truth = random_scene(rng)
    if unit:
        gallery = {
            k: (d, f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12))
            for k, (d, f) in gallery.items()
        }
        assert SearchGallery(gallery, 0.5).inv_norm is None
    else:
        assert SearchGallery(gallery, 0.5).inv_norm is not None
    names = list(gallery)
    nq = 12
    qimgs = [names[int(i)] for i in rng.integers(0, len(names), nq)]
    qf = rng.normal(size=(nq, 16))
    lists = []
    for i in range(nq):
        chosen = rng.choice(names, size=min(n_gal, len(names)), replace=False)
        lists.append([(n, truth[n].tolist() if rng.random() < 0.4 else None) for n in chosen])
    ctxs = [rng.normal(size=(int(rng.integers(0, 4)), 16)) for _ in range(nq)]
    ctxs = [c / np.linalg.norm(c, axis=1, keepdims=True) for c in ctxs]
    rcp = (0.1, 0.5) if with_rcp else None
    res = search_cuhk_sysu(
        qf, qimgs, gallery, lists, det_thresh=0.5, rcp=rcp, query_context_feats=ctxs, chunk_size=5
    )
    ref_map, ref_hits = naive_search(qf, qimgs, gallery, lists, 0.5, rcp, ctxs)
    assert res["mAP"] == pytest.approx(ref_map, abs=1e-6)
    np.testing.assert_allclose([res["top-1"], res["top-5"], res["top-10"]], ref_hits)
    # a prebuilt SearchGallery gives the same result
    again = search_cuhk_sysu(
        qf, qimgs, SearchGallery(gallery, 0.5), lists, rcp=rcp, query_context_feats=ctxs
    )
    assert again["mAP"] == pytest.approx(res["mAP"], abs=1e-9)
