"""PersonSearchEvaluator end to end on toy galleries: equals the pure functions."""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from reid_plugins.config import get_cfg
from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog
from reid_plugins.evaluation import person_search_evaluation as pse
from reid_plugins.evaluation.person_search_evaluation import (
    PersonSearchEvaluator,
    run_person_search_inference,
)
from reid_plugins.evaluation.search_metrics import (
    detection_recall_ap,
    search_cuhk_sysu,
    search_prw,
    select_context,
)

D = 16
N_IMG = 8


def make_world(seed=0):
    """Scenes with 3 persons each (pids from 0..5, one unlabelled), detections with noisy
    identity features, a false positive per image, and queries on labelled persons."""
    rng = np.random.default_rng(seed)
    ident = rng.normal(size=(6, D))
    records, outputs = [], {}
    for k in range(N_IMG):
        pids = rng.choice(6, size=3, replace=False)
        xs = np.array([10.0, 120.0, 230.0])
        boxes = np.c_[xs, np.full(3, 20.0), xs + 50, np.full(3, 150.0)]
        gt_pids = pids.copy()
        gt_pids[2] = -1  # unlabelled person (still has an identity for features)
        det_boxes = np.r_[boxes + rng.uniform(-4, 4, boxes.shape), [[300, 300, 340, 400]]]
        scores = np.r_[rng.uniform(0.4, 1.0, 3), 0.7]
        feats = np.r_[ident[pids] + 0.7 * rng.normal(size=(3, D)), rng.normal(size=(1, D))]
        name = f"s{k}.jpg"
        records.append(
            {"image_id": name, "boxes": boxes.astype(np.float32), "pids": gt_pids, "camid": k % 3}
        )
        outputs[name] = {
            "boxes": torch.tensor(det_boxes, dtype=torch.float32),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "features": torch.tensor(feats, dtype=torch.float32),
        }
    queries, qfeats = [], []
    for k in range(N_IMG):
        rec = records[k]
        pid = int(rec["pids"][0])
        gallery = []
        for other in records:
            if other["image_id"] == rec["image_id"]:
                continue
            hit = np.flatnonzero(other["pids"] == pid)
            gallery.append(
                (other["image_id"], other["boxes"][hit[0]].tolist() if hit.size else None)
            )
        queries.append(
            {
                "image_id": rec["image_id"],
                "query_box": rec["boxes"][0],
                "query_pid": pid,
                "camid": rec["camid"],
                "gallery": gallery,
            }
        )
        qfeats.append(ident[pid] + 0.7 * rng.normal(size=D))
    return records, outputs, queries, np.stack(qfeats).astype(np.float32)


def feed(ev, records, outputs, qfeats, batch=3, with_dets=False):
    for b0 in range(0, len(records), batch):
        recs = records[b0 : b0 + batch]
        ev.process(recs, [outputs[r["image_id"]] for r in recs])
    for i, q in enumerate(ev.queries):
        out = {"query_feature": torch.from_numpy(qfeats[i])[None]}
        if with_dets:
            out.update(outputs[q["image_id"]])
        ev.process_queries([{"image_id": q["image_id"], "query_index": i}], [out])


def gallery_of(outputs):
    return {
        k: (np.c_[o["boxes"].numpy(), o["scores"].numpy()], o["features"].numpy())
        for k, o in outputs.items()
    }


def test_cuhk_evaluator_equals_pure_functions_and_dumps_json(tmp_path):
    records, outputs, queries, qfeats = make_world()
    small = [q["gallery"][:4] for q in queries]  # a smaller "TestG" list per query
    ev = PersonSearchEvaluator(
        dataset_name="toy_gallery",
        queries=queries,
        gallery_curve={2: small, 7: [q["gallery"] for q in queries]},
        output_dir=str(tmp_path),
        det_thresh=0.5,
    )
    feed(ev, records, outputs, qfeats)
    res = ev.evaluate()
    gal = gallery_of(outputs)
    qimgs = [q["image_id"] for q in queries]
    ref = search_cuhk_sysu(qfeats, qimgs, gal, [q["gallery"] for q in queries], det_thresh=0.5)
    assert 0 < ref["mAP"] < 1  # a non-trivial toy
    assert res["search"]["mAP"] == pytest.approx(100 * ref["mAP"])
    for k in (1, 5, 10):
        assert res["search"][f"top-{k}"] == pytest.approx(100 * ref[f"top-{k}"])
    assert res["search"]["det_thresh"] == 0.5
    gt = {r["image_id"]: r["boxes"] for r in records}
    pids = {r["image_id"]: r["pids"] for r in records}
    dets = {k: v[0] for k, v in gal.items()}
    full = detection_recall_ap(gt, dets, det_thresh=0.5, gt_pids=pids)
    lab = detection_recall_ap(gt, dets, det_thresh=0.5, gt_pids=pids, labeled_only=True)
    assert set(res["detection"]) == {
        f"{m}@{t}"
        for m in ("recall", "AP", "recall_labeled", "AP_labeled")
        for t in ("0.01", "0.5")
    }
    assert res["detection"]["recall@0.5"] == pytest.approx(100 * full["recall"])
    assert res["detection"]["AP@0.5"] == pytest.approx(100 * full["AP"])
    assert res["detection"]["recall_labeled@0.5"] == pytest.approx(100 * lab["recall"])
    assert res["detection"]["AP_labeled@0.5"] == pytest.approx(100 * lab["AP"])
    small_ref = search_cuhk_sysu(qfeats, qimgs, gal, small, det_thresh=0.5)["mAP"]
    assert res["search_gallery_curve"] == {
        2: pytest.approx(100 * small_ref),
        7: pytest.approx(100 * ref["mAP"]),
    }
    dump = json.load(open(os.path.join(tmp_path, "search_results_cuhk_sysu.json")))
    assert len(dump["queries"]) == len(queries)
    q0 = dump["queries"][0]
    assert q0["query_image_id"] == "s0.jpg" and q0["query_box"] == queries[0]["query_box"].tolist()
    assert len(q0["top"]) == 10 and set(q0["top"][0]) == {"image_id", "box", "score", "correct"}
    assert q0["ap"] == pytest.approx(ref["records"][0]["ap"])


def test_full_set_gallery_size_minus_one():
    records, outputs, queries, qfeats = make_world(1)
    for q in queries:  # keep only the positives in the lists: full set adds the rest
        q["gallery"] = [e for e in q["gallery"] if e[1] is not None]
    ev = PersonSearchEvaluator(dataset_name="toy", queries=queries, gallery_size=-1)
    feed(ev, records, outputs, qfeats)
    res = ev.evaluate()
    ref = search_cuhk_sysu(
        qfeats,
        [q["image_id"] for q in queries],
        gallery_of(outputs),
        [q["gallery"] for q in queries],
        full_set=True,
    )
    assert res["search"]["mAP"] == pytest.approx(100 * ref["mAP"])


@pytest.mark.parametrize("with_dets", [False, True])
def test_rcp_context_from_query_image_detections(with_dets):
    records, outputs, queries, qfeats = make_world(2)
    ev = PersonSearchEvaluator(dataset_name="toy", queries=queries, rcp=(0.1, 0.5))
    feed(ev, records, outputs, qfeats, with_dets=with_dets)
    res = ev.evaluate()
    ctx = []
    for q in queries:
        o = outputs[q["image_id"]]
        ctx.append(select_context(q["query_box"], o["boxes"], o["scores"], o["features"], 0.5))
    assert all(c.shape[0] <= 3 for c in ctx) and sum(c.shape[0] for c in ctx) > 0
    gal, qimgs = gallery_of(outputs), [q["image_id"] for q in queries]
    lists = [q["gallery"] for q in queries]
    ref = search_cuhk_sysu(qfeats, qimgs, gal, lists, rcp=(0.1, 0.5), query_context_feats=ctx)
    plain = search_cuhk_sysu(qfeats, qimgs, gal, lists)
    assert res["search"]["mAP"] == pytest.approx(100 * ref["mAP"])
    assert ref["mAP"] != pytest.approx(plain["mAP"])  # RCP changed something in this toy
    # the same features ranked without context persons, reported next to it
    assert res["search_without_rcp"]["mAP"] == pytest.approx(100 * plain["mAP"])
    assert res["search_without_rcp"]["top-1"] == pytest.approx(100 * plain["top-1"])


def test_rcp_run_also_reports_and_dumps_the_ranking_without_context(tmp_path):
    """``search_without_rcp`` of an RCP evaluation equals ``search`` of the same outputs
    evaluated without RCP, and its per-query dump is written beside the RCP one."""
    records, outputs, queries, qfeats = make_world(2)
    runs = {}
    for rcp in (None, (0.1, 0.5)):
        out = tmp_path / str(rcp is not None)
        ev = PersonSearchEvaluator(
            dataset_name="toy", queries=queries, rcp=rcp, output_dir=str(out)
        )
        feed(ev, records, outputs, qfeats, with_dets=True)
        runs[rcp is not None] = (ev.evaluate(), out)
    (plain, plain_dir), (with_rcp, rcp_dir) = runs[False], runs[True]
    assert "search_without_rcp" not in plain
    assert with_rcp["search_without_rcp"] == plain["search"]
    assert with_rcp["search"]["mAP"] != pytest.approx(plain["search"]["mAP"])
    assert with_rcp["detection"] == plain["detection"]
    assert sorted(os.listdir(plain_dir)) == ["search_results_cuhk_sysu.json"]
    assert sorted(os.listdir(rcp_dir)) == [
        "search_results_cuhk_sysu.json",
        "search_results_cuhk_sysu_without_rcp.json",
    ]
    a = json.load(open(plain_dir / "search_results_cuhk_sysu.json"))
    b = json.load(open(rcp_dir / "search_results_cuhk_sysu_without_rcp.json"))
    assert b["settings"]["rcp"] is None and a["queries"] == b["queries"]
    c = json.load(open(rcp_dir / "search_results_cuhk_sysu.json"))
    assert c["settings"]["rcp"] == [0.1, 0.5]
    assert [q["ap"] for q in c["queries"]] != [q["ap"] for q in a["queries"]]


def test_add_query_api_equals_process_queries():
    records, outputs, queries, qfeats = make_world(3)
    ev = PersonSearchEvaluator(dataset_name="toy", queries=queries)
    for r in records:
        ev.process([r], [outputs[r["image_id"]]])
    for i in range(len(queries)):
        ev.add_query(i, qfeats[i])
    ev2 = PersonSearchEvaluator(dataset_name="toy", queries=queries)
    feed(ev2, records, outputs, qfeats)
    assert ev.evaluate() == ev2.evaluate()


@pytest.mark.parametrize("cross_camera", [False, True])
def test_prw_evaluator_uses_input_annotations(cross_camera):
    records, outputs, queries, qfeats = make_world(4)
    for q in queries:
        del q["gallery"]
    ev = PersonSearchEvaluator(
        dataset_name="toy_prw", queries=queries, protocol="prw", cross_camera=cross_camera
    )
    feed(ev, records, outputs, qfeats)
    res = ev.evaluate()
    ann = {r["image_id"]: r for r in records}
    ref = search_prw(
        qfeats,
        [q["image_id"] for q in queries],
        [q["query_pid"] for q in queries],
        [q["camid"] for q in queries],
        gallery_of(outputs),
        ann,
        cross_camera=cross_camera,
    )
    assert res["search"]["mAP"] == pytest.approx(100 * ref["mAP"])
    assert "search_gallery_curve" not in res


class ToyModel(nn.Module):
    def __init__(self, outputs, qfeats):
        super().__init__()
        self.outputs, self.qfeats = outputs, qfeats
        self.calls = {"gallery": 0, "query": 0}

    def forward(self, inputs):
        assert not self.training and not torch.is_grad_enabled()
        self.calls["gallery"] += 1
        return [self.outputs[x["image_id"]] for x in inputs]

    def extract_query(self, inputs):
        self.calls["query"] += 1
        return [{"query_feature": torch.from_numpy(self.qfeats[x["query_index"]])} for x in inputs]


def test_run_person_search_inference_contract():
    records, outputs, queries, qfeats = make_world(5)
    model = ToyModel(outputs, qfeats).train()
    gallery_loader = [records[i : i + 3] for i in range(0, len(records), 3)]
    query_loader = [
        [
            {"image_id": q["image_id"], "query_box": q["query_box"], "query_index": i}
            for i, q in enumerate(queries)
        ]
    ]
    ev = PersonSearchEvaluator(dataset_name="toy", queries=queries)
    res = run_person_search_inference(model, gallery_loader, query_loader, ev)
    assert model.training and model.calls == {"gallery": 3, "query": 1}
    ref = search_cuhk_sysu(
        qfeats,
        [q["image_id"] for q in queries],
        gallery_of(outputs),
        [q["gallery"] for q in queries],
    )
    assert res["search"]["mAP"] == pytest.approx(100 * ref["mAP"])


def test_distributed_parts_are_merged(monkeypatch):
    records, outputs, queries, qfeats = make_world(6)
    ev0 = PersonSearchEvaluator(dataset_name="toy", queries=queries)
    ev1 = PersonSearchEvaluator(dataset_name="toy", queries=queries)
    half = len(records) // 2
    for ev, recs, qs in (
        (ev0, records[:half], range(0, 3)),
        (ev1, records[half:], range(3, len(queries))),
    ):
        ev.process(recs, [outputs[r["image_id"]] for r in recs])
        for i in qs:
            ev.add_query(i, qfeats[i])
    monkeypatch.setattr(pse.comm, "get_world_size", lambda: 2)
    state1 = ev1._state()
    monkeypatch.setattr(pse.comm, "gather", lambda data, dst=0: [data, state1])
    res = ev0.evaluate()
    ref = search_cuhk_sysu(
        qfeats,
        [q["image_id"] for q in queries],
        gallery_of(outputs),
        [q["gallery"] for q in queries],
    )
    assert res["search"]["mAP"] == pytest.approx(100 * ref["mAP"])
    monkeypatch.setattr(pse.comm, "get_rank", lambda: 1)
    monkeypatch.setattr(pse.comm, "is_main_process", lambda: False)
    monkeypatch.setattr(pse.comm, "gather", lambda data, dst=0: [])
    assert ev1.evaluate() == {}


def test_errors_and_query_matching():
    records, outputs, queries, qfeats = make_world(7)
    ev = PersonSearchEvaluator(dataset_name="toy", queries=queries)
    ev.process(records, [outputs[r["image_id"]] for r in records])
    # matched by (image_id, query_pid) without query_index
    q = queries[2]
    ev.process_queries(
        [{"image_id": q["image_id"], "query_pid": q["query_pid"]}], [{"query_feature": qfeats[2]}]
    )
    assert list(ev._query_feats) == [2]
    with pytest.raises(RuntimeError, match="have no feature"):
        ev.evaluate()
    with pytest.raises(KeyError, match="query_feature"):
        ev.process_queries([{"query_index": 0}], [{"feature": qfeats[0]}])
    with pytest.raises(KeyError, match="lacks 'scores'"):
        ev.process([records[0]], [{"boxes": torch.zeros(1, 4), "features": torch.zeros(1, D)}])
    with pytest.raises(KeyError, match="'gallery'"):
        PersonSearchEvaluator(
            dataset_name="toy",
            queries=[{"image_id": "a", "query_box": [0, 0, 1, 1], "query_pid": 1}],
        )
    with pytest.raises(ValueError, match="protocol"):
        PersonSearchEvaluator(dataset_name="toy", queries=queries, protocol="market")


def test_from_config_reads_search_keys():
    records, outputs, queries, qfeats = make_world(8)
    cfg = get_cfg()
    cfg.TEST.SEARCH.DET_THRESH = 0.3
    cfg.TEST.SEARCH.RCP.ENABLED = True
    cfg.TEST.SEARCH.CROSS_CAMERA = True
    cfg.TEST.SEARCH.DETECTION_MATCHING = "greedy"
    cfg.TEST.SEARCH.DETECTION_THRESHOLDS = [0.05, 0.01]
    ev = PersonSearchEvaluator.from_config(cfg, "toy_prw_test", queries=queries, output_dir="")
    assert ev.protocol == "prw" and ev.det_thresh == 0.3 and ev.rcp == (0.3, 0.2)
    assert ev.cross_camera and ev.gallery_curve == {}
    assert ev.detection_matching == "greedy" and ev.detection_thresholds == [0.01, 0.05, 0.3]
    cfg.TEST.SEARCH.DETECTION_MATCHING = "hungarian"
    with pytest.raises(ValueError, match="TEST.SEARCH.DETECTION_MATCHING"):
        PersonSearchEvaluator.from_config(cfg, "toy_prw_test", queries=queries, output_dir="")


@pytest.mark.parametrize("matching", ["standard", "greedy"])
def test_detection_at_both_thresholds_uses_low_score_detections(matching):
    # Below-threshold detections (score 0.02) are dropped from search but count at 0.01: a
    # duplicate of every person's box, listed first so that the standard rule picks it.
    records, outputs, queries, qfeats = make_world(3)
    for o in outputs.values():
        dup = o["boxes"][:3].clone()
        o["boxes"] = torch.cat([dup, o["boxes"]])
        o["scores"] = torch.cat([torch.full((3,), 0.02), o["scores"]])
        o["features"] = torch.cat([o["features"][:3], o["features"]])
    ev = PersonSearchEvaluator(
        dataset_name="toy", queries=queries, det_thresh=0.5, detection_matching=matching
    )
    feed(ev, records, outputs, qfeats)
    res = ev.evaluate()["detection"]
    gt = {r["image_id"]: r["boxes"] for r in records}
    pids = {r["image_id"]: r["pids"] for r in records}
    dets = {k: np.c_[o["boxes"].numpy(), o["scores"].numpy()] for k, o in outputs.items()}
    for t in (0.01, 0.5):
        for lab, suffix in ((False, ""), (True, "_labeled")):
            ref = detection_recall_ap(
                gt, dets, det_thresh=t, gt_pids=pids, labeled_only=lab, matching=matching
            )
            assert res[f"recall{suffix}@{t:g}"] == pytest.approx(100 * ref["recall"])
            assert res[f"AP{suffix}@{t:g}"] == pytest.approx(100 * ref["AP"])
    if matching == "standard":  # the low-score duplicates are the TPs at 0.01
        assert res["recall@0.01"] == 100.0 and res["AP@0.01"] < 50.0
    else:  # greedy: the 0.5+ detections come first and take the persons
        assert res["AP@0.01"] > res["recall@0.5"] * 0.6


def test_from_config_uses_dataset_protocol_loader():
    """The scene parsers' format ({"query_image_id", ..., "gallery_image_ids", "gallery_gt"})
    through the query set's metadata ``load_protocol``; curve sizes that exist only."""
    records, outputs, queries, qfeats = make_world(9)
    calls = []

    def load_protocol(n):
        calls.append(n)
        out = []
        for q in queries:
            lst = q["gallery"][: n // 10]
            out.append(
                {
                    "query_image_id": q["image_id"],
                    "query_box": q["query_box"],
                    "query_pid": q["query_pid"],
                    "gallery_image_ids": [e[0] for e in lst],
                    "gallery_gt": {e[0]: np.asarray(e[1]) for e in lst if e[1] is not None},
                }
            )
        return out

    def load_query_records():
        MetadataCatalog.get("toyps_query").set(load_protocol=load_protocol, gallery_sizes=[50, 70])
        return []

    DatasetCatalog.register("toyps_query", load_query_records)
    MetadataCatalog.get("toyps_gallery").set(search_protocol="cuhk_sysu")
    try:
        cfg = get_cfg()
        cfg.TEST.SEARCH.GALLERY_SIZE = 70
        cfg.TEST.SEARCH.GALLERY_CURVE = [50, 70, 500]
        ev = PersonSearchEvaluator.from_config(cfg, "toyps_gallery", "toyps_query", output_dir="")
    finally:
        DatasetCatalog.remove("toyps_query")
        MetadataCatalog.remove("toyps_query")
        MetadataCatalog.remove("toyps_gallery")
    assert ev.protocol == "cuhk_sysu" and calls == [70, 50, 70]
    feed(ev, records, outputs, qfeats)
    res = ev.evaluate()
    qimgs = [q["image_id"] for q in queries]
    gal = gallery_of(outputs)
    for n in (50, 70):
        ref = search_cuhk_sysu(qfeats, qimgs, gal, [q["gallery"][: n // 10] for q in queries])
        assert res["search_gallery_curve"][n] == pytest.approx(100 * ref["mAP"])
    assert res["search"]["mAP"] == pytest.approx(res["search_gallery_curve"][70])
