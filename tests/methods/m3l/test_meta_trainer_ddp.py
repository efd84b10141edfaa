"""M3L's meta-update in two CPU processes (gloo): outer gradients are the average of the
ranks' meta-gradients, weights and memories stay identical, the meta-test domain agrees."""

import os

import torch

from reid_plugins.engine import launch
from tests.methods.m3l._helpers import m3l_ddp_worker, run_meta_iterations, tiny_m3l


def _single_process_first_grads(rank):
    """Meta-gradient of iteration 0 on ``rank``'s batches, computed without any process group,
    with as many torch threads as each of ``launch``'s two processes gets (the float summation
    order then matches; the inner Adam step amplifies float noise up to ~300x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        return run_meta_iterations(rank, 1)[1][0]
    finally:
        torch.set_num_threads(threads)


def test_m3l_meta_step_with_two_gloo_processes(tmp_path):
    launch(m3l_ddp_worker, 2, dist_url="auto", args=(str(tmp_path), 2))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)

    # both ranks draw the same meta-test domain every iteration
    assert r0["domains"] == r1["domains"]
    # the optimiser sees the same (all-reduced) gradient on both ranks ...
    for g0, g1 in zip(r0["grads"], r1["grads"]):
        for k in g0:
            torch.testing.assert_close(g0[k], g1[k], rtol=0, atol=0, msg=k)
    # ... which is the mean of the two ranks' own meta-gradients (second-order terms included)
    local = [_single_process_first_grads(r) for r in (0, 1)]
    assert any(not torch.allclose(local[0][k], local[1][k]) for k in local[0])  # data differ
    for k, g in r0["grads"][0].items():
        torch.testing.assert_close(g, (local[0][k] + local[1][k]) / 2, rtol=1e-4, atol=1e-6)
    # weights and memories (updated from features gathered over both ranks) stay identical
    for k, v in r0["state"].items():
        if "running" in k or "num_batches" in k:
            continue  # BN statistics are per process
        torch.testing.assert_close(v, r1["state"][k], rtol=0, atol=0, msg=k)
    mem = [k for k in r0["state"] if "memory" in k]
    assert mem
    init = tiny_m3l(seed=0).state_dict()
    assert any(not torch.equal(r0["state"][k], init[k]) for k in mem)  # memories were updated
