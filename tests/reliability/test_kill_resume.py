"""kill -9 during training, ``--resume``, repeat: the result equals an uninterrupted run.

Runs the real command line (``tools/train_net.py``) in subprocesses on a tiny ReIDBaseline
(ResNet-18, BASE_WIDTH 4, 32x16 crops, Adam, warm-up + LR step, CE + triplet, random erasing,
flips and padding) trained on a tiny synthetic Market-layout dataset. The interrupted run is
SIGKILLed at seeded-random iterations (when ``metrics.json`` shows the target iteration),
resumed with ``--resume`` each time, and its ``model_final.pth`` tensors and final evaluation
metrics must be bitwise equal to the uninterrupted run's.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from reid_plugins.data.synthetic_reid import generate_synthetic_reid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")

MAX_ITER = 14
CHECKPOINT_PERIOD = 3  # checkpoints after iterations 2, 5, 8, 11 and model_final (13)
NUM_KILLS = 3
KILL_SEED = 2024
PROCESS_TIMEOUT = 240  # seconds; a hung child fails the test instead of blocking CI

TINY_CONFIG = {
    "MODEL": {
        "META_ARCHITECTURE": "ReIDBaseline",
        "DEVICE": "cpu",
        "BACKBONE": {"DEPTH": 18, "BASE_WIDTH": 4, "LAST_STRIDE": 1, "FROM_SCRATCH": True},
        "LOSSES": {"CE": {"ENABLED": True}, "TRIPLET": {"ENABLED": True}},
    },
    "INPUT": {
        "SIZE_TRAIN": [32, 16],
        "SIZE_TEST": [32, 16],
        "PADDING": {"ENABLED": True, "SIZE": 2},
        "REA": {"ENABLED": True, "PROB": 0.5},
    },
    "DATASETS": {"TRAIN": ["synthetic_reid_synA_train"], "TEST": ["synthetic_reid_synA_test"]},
    "DATALOADER": {"NUM_WORKERS": 0, "NUM_INSTANCE": 2},
    "SOLVER": {
        "OPTIMIZER": "Adam",
        "BASE_LR": 0.003,
        "IMS_PER_BATCH": 8,
        "MAX_ITER": MAX_ITER,
        "STEPS": [9],
        "WARMUP_ITERS": 4,
        "CHECKPOINT_PERIOD": CHECKPOINT_PERIOD,
    },
    "TEST": {"IMS_PER_BATCH": 16, "EVAL_PERIOD": 0},
    "SEED": 7,
    "DETERMINISTIC": True,
    "LOG_PERIOD": 1,
}


def kill_iterations(seed: int = KILL_SEED, num: int = NUM_KILLS) -> list:
    """Seeded-random, increasing kill targets, all before the last iterations (so a kill
    always lands while the process is still training)."""
    return sorted(random.Random(seed).sample(range(1, MAX_ITER - 3), num))


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_resume")
    datasets = root / "datasets"
    generate_synthetic_reid(
        str(datasets),
        domains=["synA"],
        num_train_ids=6,
        num_test_ids=4,
        images_per_id_per_cam=2,
        num_cams=2,
        height=32,
        width=16,
        num_distractors=1,
        num_junk=1,
        progress=False,
    )
    cfg_file = root / "tiny_reid.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY_CONFIG))
    torchrun_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in torchrun_vars}  # a plain 1-process run
    env.update(
        REID_DATASETS=str(datasets),
        OMP_NUM_THREADS="1",  # tiny model: threads only add contention (and cost time)
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return root, cfg_file, env


def _start(cfg_file, out_dir, env, resume: bool, log_name: str) -> subprocess.Popen:
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, TRAIN_NET, "--config-file", str(cfg_file)]
    if resume:
        cmd.append("--resume")
    cmd += ["OUTPUT_DIR", str(out_dir)]
    log = open(os.path.join(out_dir, log_name), "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc._reliability_log = log  # closed by _finish
    return proc


def _finish(proc: subprocess.Popen, timeout: float = PROCESS_TIMEOUT) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc._reliability_log.close()
    with open(proc._reliability_log.name) as f:
        return f.read()


def _iterations_since(metrics_file: str, offset: int) -> list:
    """Iterations in the complete JSON lines appended to ``metrics.json`` after ``offset``."""
    if not os.path.exists(metrics_file):
        return []
    with open(metrics_file, "rb") as f:
        f.seek(offset)
        data = f.read()
    out = []
    for line in data.split(b"\n")[:-1]:  # the last piece may be a partial line
        try:
            out.append(int(json.loads(line)["iteration"]))
        except (ValueError, KeyError):
            continue  # a line cut by an earlier SIGKILL
    return out


def _run_and_kill(cfg_file, out_dir, env, resume: bool, target: int, log_name: str) -> dict:
    """Start a run, SIGKILL it as soon as metrics.json shows iteration >= target."""
    metrics_file = os.path.join(out_dir, "metrics.json")
    offset = os.path.getsize(metrics_file) if os.path.exists(metrics_file) else 0
    proc = _start(cfg_file, out_dir, env, resume, log_name)
    deadline = time.monotonic() + PROCESS_TIMEOUT
    seen = []
    while proc.poll() is None and time.monotonic() < deadline:
        seen = _iterations_since(metrics_file, offset)
        if seen and max(seen) >= target:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    log = _finish(proc, timeout=30)
    assert proc.returncode == -signal.SIGKILL, (
        f"run was not killed at iteration {target} (exit code {proc.returncode}); log tail:\n"
        + log[-3000:]
    )
    return {"target": target, "last_logged": max(seen), "first_logged": min(seen), "log": log}


def _last_checkpoint_iter(out_dir) -> int:
    """Iteration stored in the checkpoint ``last_checkpoint`` points to (-1 if none)."""
    tag = os.path.join(out_dir, "last_checkpoint")
    if not os.path.exists(tag):
        return -1
    with open(tag) as f:
        name = f.read().strip()
    ckpt = torch.load(os.path.join(out_dir, name), map_location="cpu", weights_only=False)
    return int(ckpt["trainer"]["iteration"])


def test_kill_targets_are_seeded():
    assert kill_iterations() == kill_iterations()
    assert len(set(kill_iterations())) == NUM_KILLS
    assert all(1 <= k < MAX_ITER - 3 for k in kill_iterations())


def test_sigkill_and_resume_equals_uninterrupted_run(tiny_setup):
    root, cfg_file, env = tiny_setup
    ref_dir, int_dir = root / "uninterrupted", root / "interrupted"

    # The reference run goes on alongside the first interrupted one (2 cores).
    ref = _start(cfg_file, ref_dir, env, resume=False, log_name="stdout.txt")
    try:
        kills = []
        for n, target in enumerate(kill_iterations()):
            expected_start = _last_checkpoint_iter(int_dir) + 1
            kills.append(_run_and_kill(cfg_file, int_dir, env, n > 0, target, f"stdout_{n}.txt"))
            if n > 0 and expected_start > 0:
                # resumed from the last complete checkpoint, not from scratch
                assert f"training continues at iteration {expected_start}" in kills[-1]["log"]
                assert kills[-1]["first_logged"] >= expected_start
        expected_start = _last_checkpoint_iter(int_dir) + 1
        assert expected_start > 0, "no checkpoint survived the kills"
        final = _start(cfg_file, int_dir, env, resume=True, log_name="stdout_final.txt")
        final_log = _finish(final)
        assert final.returncode == 0, final_log[-3000:]
        assert f"training continues at iteration {expected_start}" in final_log
    finally:
        ref_log = _finish(ref)
    assert ref.returncode == 0, ref_log[-3000:]

    # Every kill landed after its target iteration was logged, i.e. mid-training.
    assert all(k["last_logged"] >= k["target"] for k in kills)
    assert all(k["last_logged"] < MAX_ITER - 1 for k in kills)

    a = torch.load(ref_dir / "model_final.pth", map_location="cpu", weights_only=False)
    b = torch.load(int_dir / "model_final.pth", map_location="cpu", weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == MAX_ITER - 1
    # optimizer moments and the scheduler state are identical too
    for sa, sb in zip(
        a["trainer"]["optimizer"]["state"].values(), b["trainer"]["optimizer"]["state"].values()
    ):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert a["trainer"]["hooks"]["LRScheduler"] == b["trainer"]["hooks"]["LRScheduler"]

    with open(ref_dir / "eval_results.json") as f:
        ref_metrics = json.load(f)
    with open(int_dir / "eval_results.json") as f:
        int_metrics = json.load(f)
    assert ref_metrics == int_metrics
    reid = ref_metrics["synthetic_reid_synA_test"]["reid"]
    assert set(reid) == {"Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"}
