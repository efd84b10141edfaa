"""Helpers of the command-line tests: a tiny synthetic ReID dataset, a tiny config and
``tools/train_net.py`` run in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import yaml

from reid_plugins.data.synthetic_reid import generate_synthetic_reid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
TIMEOUT = 240  # seconds; a hung child fails the test instead of blocking CI

#: ResNet-18 with 4 base channels on 32x16 crops: an iteration takes a few milliseconds.
TINY_CONFIG = {
    "MODEL": {
        "META_ARCHITECTURE": "ReIDBaseline",
        "DEVICE": "cpu",
        "BACKBONE": {"DEPTH": 18, "BASE_WIDTH": 4, "LAST_STRIDE": 1, "FROM_SCRATCH": True},
    },
    "INPUT": {"SIZE_TRAIN": [32, 16], "SIZE_TEST": [32, 16]},
    "DATASETS": {"TRAIN": ["synthetic_reid_synA_train"], "TEST": ["synthetic_reid_synA_test"]},
    "DATALOADER": {"NUM_WORKERS": 0, "NUM_INSTANCE": 2},
    "SOLVER": {
        "IMS_PER_BATCH": 8,
        "MAX_ITER": 3,
        "STEPS": [2],
        "WARMUP_ITERS": 1,
        "CHECKPOINT_PERIOD": 1000,
    },
    "TEST": {"IMS_PER_BATCH": 16},
    "SEED": 3,
    "LOG_PERIOD": 1,
}


def make_tiny_setup(root) -> tuple:
    """Write the synthetic dataset and ``tiny.yaml`` under ``root``; return ``(config file,
    environment for the subprocesses)``."""
    datasets = os.path.join(str(root), "datasets")
    generate_synthetic_reid(
        datasets,
        domains=["synA"],
        num_train_ids=4,
        num_test_ids=3,
        images_per_id_per_cam=2,
        num_cams=2,
        height=32,
        width=16,
        num_distractors=1,
        num_junk=0,
        progress=False,
    )
    cfg_file = os.path.join(str(root), "tiny.yaml")
    with open(cfg_file, "w") as f:
        yaml.safe_dump(TINY_CONFIG, f)
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    drop += ("OMP_WAIT_POLICY", "REID_DEBUG", "REID_THREADS_SHARED")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        REID_DATASETS=datasets,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return cfg_file, env


def train_net_cmd(cfg_file: str, out_dir, *extra: str, opts: List[str] = ()) -> List[str]:
    return [sys.executable, TRAIN_NET, "--config-file", str(cfg_file), *extra,
            *opts, "OUTPUT_DIR", str(out_dir)]  # fmt: skip


def run(cmd: List[str], env: Dict[str, str], timeout: float = TIMEOUT, **kw):
    """Run to completion; returns the ``CompletedProcess`` (text stdout / stderr)."""
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kw
    )


def stderr_lines(proc) -> List[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


def logged_iterations(metrics_file: str) -> List[int]:
    """Iterations of the complete lines of ``metrics.json`` (training lines only)."""
    if not os.path.exists(metrics_file):
        return []
    out = []
    with open(metrics_file) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "total_loss" in rec:
                out.append(int(rec["iteration"]))
    return out


def signal_after(
    cmd: List[str],
    env: Dict[str, str],
    metrics_file: str,
    after_iter: int,
    signum: int,
    *,
    group: bool = False,
    timeout: float = TIMEOUT,
) -> tuple:
    """Start ``cmd``; once ``metrics_file`` shows an iteration >= ``after_iter`` send
    ``signum`` (to the whole process group with ``group``, like Ctrl-C in a terminal).
    Returns ``(returncode, stdout, stderr, iteration seen when signalled)``."""
    before = len(logged_iterations(metrics_file))
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    seen: Optional[int] = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            its = logged_iterations(metrics_file)[before:]
            if its and max(its) >= after_iter:
                seen = max(its)
                if group:
                    os.killpg(proc.pid, signum)
                else:
                    os.kill(proc.pid, signum)
                break
            time.sleep(0.01)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err, seen
