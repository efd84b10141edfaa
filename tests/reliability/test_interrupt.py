"""Ctrl-C / SIGTERM through the command line: a checkpoint at the end of the current
iteration, one line saying how to resume, exit 130 / 143; the printed command resumes at the
next iteration. A finished run is not overwritten without ``--overwrite``.

``tools/train_net.py`` runs in subprocesses on a tiny synthetic dataset. The SIGINT goes to
the whole process group (as Ctrl-C in a terminal does, DataLoader worker included); the
SIGTERM to the trainer's process only (as ``kill`` / a cluster scheduler does).
"""

import os
import shlex
import signal
import sys

import pytest
import torch

from tests.reliability._cli import (
    logged_iterations,
    make_tiny_setup,
    run,
    signal_after,
    stderr_lines,
    train_net_cmd,
)

# Many iterations: the run is always signalled long before it would end by itself.
LONG = ["SOLVER.MAX_ITER", "5000", "SOLVER.STEPS", "[4000]", "DATASETS.TEST", "[]"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    cfg_file, env = make_tiny_setup(root)
    return root, cfg_file, env


def _checkpoint_iteration(path: str) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["trainer"]["iteration"])


def _resume_command(line: str) -> list:
    """The command printed after 'Resume with: ', runnable here."""
    cmd = shlex.split(line.split("Resume with: ", 1)[1])
    assert cmd[0] == "python" and cmd[2] == "--resume"
    return [sys.executable] + cmd[1:]


def test_sigint_then_sigterm_save_and_resume(tiny):
    root, cfg_file, env = tiny
    out = os.path.join(str(root), "run")
    metrics = os.path.join(out, "metrics.json")

    # 1) Ctrl-C (SIGINT to the process group) with a DataLoader worker process.
    cmd = train_net_cmd(cfg_file, out, opts=LONG + ["DATALOADER.NUM_WORKERS", "1"])
    rc, stdout, stderr, seen = signal_after(cmd, env, metrics, 2, signal.SIGINT, group=True)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert rc == 130, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("ERROR: Training stopped by SIGINT"), lines
    assert "Traceback" not in stdout + stderr
    first_stop = max(logged_iterations(metrics))
    assert first_stop >= seen  # the iteration under way when the signal came was finished
    ckpt = os.path.join(out, f"model_{first_stop:07d}.pth")
    assert f"checkpoint saved to {ckpt}" in lines[0]
    assert _checkpoint_iteration(ckpt) == first_stop
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == os.path.basename(ckpt)

    # 2) The printed command resumes at the next iteration; SIGTERM to the process only.
    resume = _resume_command(lines[0])
    assert "--resume" in resume and resume[-2:] == ["OUTPUT_DIR", out]
    before = len(logged_iterations(metrics))
    rc, stdout, stderr, seen = signal_after(resume, env, metrics, first_stop + 2, signal.SIGTERM)
    assert rc == 143, stderr[-3000:]
    assert f"training continues at iteration {first_stop + 1}" in stdout
    resumed = logged_iterations(metrics)[before:]
    assert resumed[0] == first_stop + 1 and resumed == list(range(resumed[0], resumed[-1] + 1))
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: Training stopped by SIGTERM"), lines
    second_stop = resumed[-1]
    assert _checkpoint_iteration(os.path.join(out, f"model_{second_stop:07d}.pth")) == second_stop


def test_finished_run_is_not_overwritten_without_flag(tiny):
    """The ``--overwrite`` run also shows: SOLVER.STEPS beyond MAX_ITER only warn, the user's
    OMP_WAIT_POLICY is kept, files get 0644 under umask 022, no FutureWarning, and the
    training set's statistics table is printed once."""
    root, cfg_file, env = tiny
    out = os.path.join(str(root), "finished")
    os.makedirs(out)
    with open(os.path.join(out, "model_final.pth"), "wb") as f:
        f.write(b"a finished run")
    opts = ["DATASETS.TEST", "[]"]

    proc = run(train_net_cmd(cfg_file, out, opts=opts), env)
    lines = stderr_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert "holds a finished run" in lines[0] and "--overwrite" in lines[0] and out in lines[0]
    with open(os.path.join(out, "model_final.pth"), "rb") as f:
        assert f.read() == b"a finished run"
    assert sorted(os.listdir(out)) == ["model_final.pth"]  # nothing written

    opts += ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "[1, 7]"]
    proc = run(train_net_cmd(cfg_file, out, "--overwrite", opts=opts),
               {**env, "OMP_WAIT_POLICY": "ACTIVE"}, umask=0o022)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("model_final.pth", "last_checkpoint", "metrics.json", "config.yaml"):
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o644, name
    assert "Warning" not in proc.stderr, proc.stderr  # fvcore's torch.jit.script FutureWarning
    assert proc.stdout.count("Statistics of 'synthetic_reid_synA_train'") == 1
    assert "SOLVER.STEPS [1, 7] has values at or beyond SOLVER.MAX_ITER=2" in proc.stderr
    assert _checkpoint_iteration(os.path.join(out, "model_final.pth")) == 1
    assert "OMP_WAIT_POLICY  ACTIVE" in proc.stdout  # environment table: the user's choice
