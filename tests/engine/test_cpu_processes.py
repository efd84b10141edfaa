"""``--num-gpus N`` on CPU through the command line: the N gloo processes share one process'
torch threads and DataLoader workers, and a user error in the workers is still one line."""

import os
import subprocess

import pytest

from tests.reliability._cli import make_tiny_setup, run, stderr_lines, train_net_cmd
from tests.reliability.test_cli_errors import _corrupt_copy

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="needs a POSIX system (gloo on localhost)"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpu_processes")
    cfg_file, env = make_tiny_setup(root)
    return root, cfg_file, {**env, "OMP_NUM_THREADS": "2"}


def test_two_cpu_processes_split_workers_and_threads(tiny):
    root, cfg_file, env = tiny
    out = os.path.join(str(root), "ddp")
    opts = ["DATALOADER.NUM_WORKERS", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "[1]",
            "DATASETS.TEST", "[]"]  # fmt: skip
    proc = run(train_net_cmd(cfg_file, out, "--num-gpus", "2", opts=opts), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # OMP_NUM_THREADS=2 shared by 2 processes: 1 thread each; 2 workers: 1 each.
    assert (
        "2 CPU processes on this machine: DATALOADER.NUM_WORKERS 2 -> 1 and 1 torch threads "
        "per process" in proc.stdout
    ), proc.stdout[-3000:]
    assert "World size: 2" in proc.stdout
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def test_user_error_in_worker_processes_is_one_line(tiny):
    root, cfg_file, env = tiny
    corrupt = _corrupt_copy(root)
    cmd = train_net_cmd(cfg_file, os.path.join(str(root), "ddp_err"), "--num-gpus", "2",
                        opts=["DATASETS.TEST", "[]"])  # fmt: skip
    proc = subprocess.run(cmd, env={**env, "REID_DATASETS": corrupt}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    lines = stderr_lines(proc)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("ERROR: Cannot read image"), lines
    assert "DATALOADER.SKIP_CORRUPT" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
