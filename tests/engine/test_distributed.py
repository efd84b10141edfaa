"""Two CPU processes (gloo) train with DDP and gather metrics."""

import torch

from reid_plugins.engine import launch
from tests._testing import toy_ddp_worker


def test_gloo_ddp_two_processes(tmp_path):
    launch(toy_ddp_worker, 2, dist_url="auto", args=(str(tmp_path), 6))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world_size"] == r1["world_size"] == 2
    # DDP keeps the trainable weights identical across ranks
    for k, v in r0["state"].items():
        if "running" in k or "num_batches" in k:
            continue  # BN statistics are per-process (broadcast_buffers=False)
        assert torch.allclose(v, r1["state"][k]), k
    # all_gather returns every rank's value in rank order; reduce_dict averages them
    assert r0["gathered"] == r1["gathered"] == [r0["loss"], r1["loss"]]
    assert r0["loss"] != r1["loss"]  # different data per rank
    expected = (r0["loss"] + r1["loss"]) / 2
    assert abs(r0["reduced"] - expected) < 1e-6 and abs(r1["reduced"] - expected) < 1e-6
