"""A user's mistake through the command line: one line on stderr, exit status 2.

Each case runs ``tools/train_net.py`` in a subprocess (all cases at once) on a tiny synthetic
dataset and checks: exit status 2, exactly one non-empty line on stderr, that line names the
culprit and says what to do, and no traceback anywhere (stdout included). ``--debug`` brings
the traceback back. The mechanism itself (:func:`run_cli`) is checked in-process: user errors
become one line, program bugs keep their traceback.
"""

import os
import shutil
import subprocess
import sys

import pytest

from reid_plugins.config import ConfigError
from reid_plugins.data.detection_utils import ImageReadError
from reid_plugins.utils.errors import (
    OutputDirError,
    TrainingInterrupted,
    UserError,
    is_user_error,
    one_line,
    run_cli,
)
from tests.reliability._cli import REPO, make_tiny_setup, stderr_lines, train_net_cmd


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    cfg_file, env = make_tiny_setup(root)
    return root, cfg_file, env


def _corrupt_copy(root) -> str:
    """A copy of the tiny datasets whose training images are all truncated JPEGs."""
    src = os.path.join(str(root), "datasets")
    dst = os.path.join(str(root), "datasets_corrupt")
    shutil.copytree(src, dst)
    train = os.path.join(dst, "synthetic_reid", "synA", "bounding_box_train")
    for name in os.listdir(train):
        path = os.path.join(train, name)
        with open(path, "rb") as f:
            head = f.read(40)
        with open(path, "wb") as f:
            f.write(head)  # SOI + a few header bytes: truncated
    return dst


def _cases(root, cfg_file):
    out = os.path.join(str(root), "out")
    weights = os.path.join(str(root), "garbage.pth")
    with open(weights, "wb") as f:
        f.write(b"not a checkpoint")
    a_file = os.path.join(str(root), "a_file")
    with open(a_file, "w") as f:
        f.write("x")
    corrupt = _corrupt_copy(root)
    empty = os.path.join(str(root), "empty_root")
    os.makedirs(empty, exist_ok=True)
    # (name, command line, environment changes, fragments the line must contain)
    return [
        (
            "missing config file",
            [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
             os.path.join(str(root), "nowhere.yaml")],
            {},
            ["nowhere.yaml", "--config-file"],
        ),
        (
            "bad value found by a builder",
            train_net_cmd(cfg_file, out, opts=["MODEL.BACKBONE.DEPTH", "19"]),
            {},
            ["MODEL.BACKBONE.DEPTH=19", "18, 34, 50, 101", "Fix this config value"],
        ),
        (
            "missing dataset root",
            train_net_cmd(cfg_file, out, opts=["DATASETS.TRAIN", "['market1501_train']",
                                               "DATASETS.TEST", "[]"]),
            {"REID_DATASETS": empty},
            ["Market-1501", empty, "REID_DATASETS"],
        ),
        (
            "real-data config without the data",
            train_net_cmd(os.path.join(REPO, "projects", "tdn", "prw.yaml"), out,
                          opts=["MODEL.DEVICE", "cpu"]),
            {"REID_DATASETS": empty},
            [os.path.join(empty, "prw", "frame_train.mat"), "datasets/README.md (PRW)",
             "python tools/check_dataset.py prw_train"],
        ),
        (
            "backbone from random weights",
            train_net_cmd(cfg_file, out, opts=["MODEL.BACKBONE.FROM_SCRATCH", "False"]),
            {},
            ["MODEL.BACKBONE.PRETRAIN_PATH is empty", "ResNet18_Weights.IMAGENET1K_V1",
             "MODEL.BACKBONE.FROM_SCRATCH True"],
        ),
        (
            "corrupt image (read in a DataLoader worker process)",
            train_net_cmd(cfg_file, out, opts=["DATASETS.TEST", "[]", "DATALOADER.NUM_WORKERS", "1"]),
            {"REID_DATASETS": corrupt},
            ["Cannot read image", "bounding_box_train", "DATALOADER.SKIP_CORRUPT True"],
        ),
        (
            "unreadable weights",
            train_net_cmd(cfg_file, out, "--eval-only", opts=["MODEL.WEIGHTS", weights]),
            {},
            [weights, "MODEL.WEIGHTS"],
        ),
        (
            "OUTPUT_DIR not writable",
            train_net_cmd(cfg_file, os.path.join(a_file, "out")),
            {},
            ["OUTPUT_DIR", a_file, "Choose another OUTPUT_DIR"],
        ),
    ]  # fmt: skip


def test_user_errors_print_one_line_and_exit_2(tiny):
    root, cfg_file, env = tiny
    cases = _cases(root, cfg_file)
    procs = []
    for name, cmd, env_changes, _ in cases:  # all at once: most of the time is imports
        procs.append(
            subprocess.Popen(
                cmd, cwd=str(root), env={**env, **env_changes}, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    for (name, _, _, fragments), proc in zip(cases, procs):
        out, err = proc.communicate(timeout=300)
        proc.stderr_text = err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{err[-3000:]}"
        assert len(lines) == 1, f"{name}: stderr is not one line:\n{err[-3000:]}"
        assert lines[0].startswith("ERROR: "), lines[0]
        for fragment in fragments:
            assert fragment in lines[0], f"{name}: {fragment!r} not in {lines[0]!r}"
        assert "Traceback" not in out + err, f"{name}: a traceback was printed"


def test_debug_shows_the_traceback(tiny):
    root, cfg_file, env = tiny
    cmd = train_net_cmd(cfg_file, os.path.join(str(root), "out"), "--debug",
                        opts=["SOLVER.MAX_ITERS", "3"])  # fmt: skip
    proc = subprocess.run(cmd, cwd=str(root), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError" in proc.stderr and "SOLVER.MAX_ITERS" in proc.stderr
    assert len(stderr_lines(proc)) > 5


# ----------------------------------------------------------------------------- run_cli itself
def _raiser(exc):
    def main(argv):
        raise exc

    return main


def test_run_cli_reports_user_errors_as_one_line(capsys, monkeypatch):
    monkeypatch.delenv("REID_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        run_cli(_raiser(ConfigError("Invalid config file 'a.yaml': Non-existent key: X.Y")), [])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ERROR: Invalid config file 'a.yaml'")
    assert "--debug" in err  # the hint

    with pytest.raises(SystemExit) as e:
        run_cli(_raiser(TrainingInterrupted("Training stopped by SIGTERM", 15)), [])
    assert e.value.code == 143
    with pytest.raises(SystemExit) as e:
        run_cli(_raiser(TrainingInterrupted("Training stopped by SIGINT", 2)), [])
    assert e.value.code == 130
    capsys.readouterr()

    # A builder's ValueError naming a config key is a bad value, reported the same way.
    with pytest.raises(SystemExit) as e:
        run_cli(_raiser(ValueError("MODEL.HEADS.POOL must be one of ['avg'], got 'x'")), [])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("ERROR: MODEL.HEADS.POOL must be one of")


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("boom"), ValueError("shapes do not match"), KeyError("res5"), TypeError("x")],
)
def test_program_bugs_keep_their_traceback(exc, monkeypatch):
    monkeypatch.delenv("REID_DEBUG", raising=False)
    with pytest.raises(type(exc)):
        run_cli(_raiser(exc), [])


def test_debug_flag_is_removed_and_reraises(monkeypatch):
    monkeypatch.delenv("REID_DEBUG", raising=False)
    seen = []

    def main(argv):
        seen.append(list(argv))
        raise OutputDirError("Cannot write to OUTPUT_DIR '/x': Permission denied")

    with pytest.raises(OutputDirError):
        run_cli(main, ["--config-file", "a.yaml", "--debug", "SEED", "1"])
    assert seen == [["--config-file", "a.yaml", "SEED", "1"]]
    assert os.environ["REID_DEBUG"] == "1"  # inherited by DDP workers
    monkeypatch.delenv("REID_DEBUG")


def test_worker_reraised_errors_are_reduced_to_their_message():
    """DataLoader workers re-raise ``type(e)(formatted traceback)`` in the main process."""
    text = (
        "Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most "
        'recent call last):\n  File "x.py", line 3, in f\n    raise ImageReadError(p, r)\n'
        "reid_plugins.data.detection_utils.ImageReadError: Cannot read image '/d/a.jpg': "
        "truncated JPEG\n"
    )
    exc = ImageReadError(text)
    assert is_user_error(exc)
    line = one_line(exc)
    assert line.startswith("Cannot read image '/d/a.jpg': truncated JPEG.")
    assert "DATALOADER.SKIP_CORRUPT True" in line and "\n" not in line
    # wrapped with ``raise ... from`` by code that is not ours: the cause is found
    try:
        try:
            raise ImageReadError("/d/b.jpg", "empty file")
        except ImageReadError as e:
            raise RuntimeError("batch failed") from e
    except RuntimeError as wrapped:
        assert is_user_error(wrapped)
        assert one_line(wrapped).startswith("Cannot read image '/d/b.jpg': empty file")
    assert issubclass(ConfigError, (UserError, KeyError))
