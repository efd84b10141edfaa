"""ReID evaluation sharded over 2 gloo processes equals the single-process evaluation.

Both runs go through the real path: a registered test set of image files,
``build_reid_test_loader`` (each rank reads its contiguous shard), ``inference_on_dataset``
and ``ReIDEvaluator`` (``comm.gather`` on rank 0). The model returns fixed features, some of
them exactly duplicated so that tie-breaking by gallery order matters: a gather that
reordered samples would change the rankings.
"""

import json

import numpy as np
import torch

from reid_plugins.data import DatasetCatalog
from reid_plugins.engine import launch
from reid_plugins.evaluation import evaluate_rank
from tests._testing import reid_eval_worker, write_tiny_image

NAME = "reliability_ddp_eval_test"


def _write_inputs(tmp_path, num_query=5, num_gallery=16):
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(num_query + num_gallery, 8)).astype(np.float32)
    feats[num_query + 4] = feats[num_query + 1]  # exact duplicates in the gallery: ties
    feats[num_query + 9] = feats[num_query + 1]
    records = []
    for i in range(num_query + num_gallery):
        is_query = i < num_query
        records.append(
            {
                "file_name": write_tiny_image(tmp_path / f"img{i:02d}.jpg", seed=i),
                "pid": int(i % 4 + 1) if is_query else int(rng.integers(0, 5)),
                "camid": int(i % 2) if is_query else int(rng.integers(0, 3)),
                "is_query": is_query,
                "dataset": NAME,
                "feature_index": i,
            }
        )
    records[num_query + 4]["pid"] = records[num_query + 1]["pid"] = records[0]["pid"]
    records[num_query + 4]["camid"] = records[num_query + 1]["camid"] = 1 - records[0]["camid"]
    records[num_query + 9]["pid"] = 0  # a distractor tied with a true match
    torch.save(
        {
            "name": NAME,
            "records": records,
            "features": torch.from_numpy(feats),
            "metric": "cosine",
            "batch_size": 4,
        },
        tmp_path / "eval_input.pt",
    )
    return records, feats


def _read(tmp_path, world):
    with open(tmp_path / f"eval_ws{world}.json") as f:
        out = json.load(f)
    with open(tmp_path / f"ws{world}" / f"reid_topk_{NAME}.json") as f:
        out["dump"] = json.load(f)
    return out


def test_two_process_gloo_evaluation_equals_single_process(tmp_path):
    records, feats = _write_inputs(tmp_path)
    try:
        launch(reid_eval_worker, 1, args=(str(tmp_path),))  # in this process
    finally:
        if NAME in DatasetCatalog:
            DatasetCatalog.remove(NAME)
    launch(reid_eval_worker, 2, dist_url="auto", args=(str(tmp_path),))
    single, ddp = _read(tmp_path, 1), _read(tmp_path, 2)

    n = len(records)
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert single["shards"] == [list(range(n))]
    # contiguous shards (11 + 10), rank 1 holds gallery samples only
    assert ddp["shards"] == [list(range(11)), list(range(11, n))]
    assert ddp["results"] == single["results"]  # bit-identical metrics
    assert ddp["dump"]["queries"] == single["dump"]["queries"]  # and per-query rankings

    # and both equal a direct evaluation of the same features
    q = np.array([r["is_query"] for r in records])
    pids = np.array([r["pid"] for r in records])
    cams = np.array([r["camid"] for r in records])
    qf = feats[q] / np.linalg.norm(feats[q], axis=1, keepdims=True)
    gf = feats[~q] / np.linalg.norm(feats[~q], axis=1, keepdims=True)
    ref = evaluate_rank(1 - qf @ gf.T, pids[q], pids[~q], cams[q], cams[~q], 10)
    got = single["results"]["reid"]
    assert got["Rank-1"] == 100 * ref["cmc"][0]
    np.testing.assert_allclose(got["mAP"], 100 * ref["mAP"], atol=1e-9)
    np.testing.assert_allclose(got["mINP"], 100 * ref["mINP"], atol=1e-9)
