"""docs/plugins.md: every snippet runs. The files are written into a temporary folder outside
the package and the page's commands train the user's backbone, meta-architecture, dataset,
config keys and evaluator through the real command line (2 iterations; single process and
``--num-gpus 2`` with gloo), with the plugins named by ``PLUGINS``, ``--plugin`` and
``$REID_PLUGINS`` (paths and module names), then evaluate with the saved config alone.
``reid-train`` is the repository's ``tools/train_net.py`` (the console script's target,
checked here too)."""

import json
import os
import re
import stat
import subprocess
import sys
import tomllib

import pytest

from reid_plugins.utils import plugins

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "plugins.md")


def _blocks():
    with open(DOC) as f:
        return re.findall(r"```(\w*)\n(.*?)```", f.read(), flags=re.S)


def test_every_snippet_is_a_file_or_a_command():
    blocks = _blocks()
    assert len(blocks) >= 10
    for lang, body in blocks:
        if not lang:
            continue  # the folder tree
        first = body.splitlines()[0]
        assert first.startswith("# file: ") or first == "# run", (lang, first)


def test_pyproject_snippet_declares_the_entry_point_group():
    (toml,) = [b for _, b in _blocks() if b.startswith("# file: my_project/pyproject.toml")]
    eps = tomllib.loads(toml)["project"]["entry-points"]
    assert list(eps) == [plugins.ENTRY_POINT_GROUP]
    assert eps[plugins.ENTRY_POINT_GROUP] == {"my_reid": "my_reid"}  # the package of the page
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        ours = tomllib.load(f)["project"]
    assert ours["entry-points"][plugins.ENTRY_POINT_GROUP] == {"builtin": "reid_plugins.methods"}
    assert ours["scripts"]["reid-train"] == "reid_plugins.cli.train_net:run"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The page's files under a temporary folder, and the output of its commands."""
    root = tmp_path_factory.mktemp("user")
    assert not str(root).startswith(REPO)
    commands = []
    for lang, body in _blocks():
        first = body.splitlines()[0] if body else ""
        if first.startswith("# file: "):
            path = root / first[len("# file: ") :].strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif first == "# run":
            commands.append(body)
    assert len(commands) == 1
    # ``reid-train`` = the console script's target, run from this checkout
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "reid-train"
    shim.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{os.path.join(REPO, "tools", "train_net.py")}" "$@"\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k not in (plugins.ENV_VAR, "REID_DATASETS")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # the tools find this checkout themselves
    proc = subprocess.run(
        ["bash", "-e", "-c", commands[0]],
        cwd=root / "my_project",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    return root / "my_project", proc.stdout


def _metrics(folder):
    with open(folder / "metrics.json") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("run", ["key", "flag_ddp", "env"])
def test_each_form_trains_two_iterations_and_evaluates(project, run):
    folder, _ = project
    out = folder / "output" / run
    assert (out / "model_final.pth").is_file()
    lines = _metrics(out)
    assert max(x["iteration"] for x in lines if "loss_cls" in x) == 1  # 2 iterations
    last = lines[-1]
    for key in ("reid/mAP", "reid/Rank-1", "similarity/pos", "similarity/neg"):
        assert key in last, (run, sorted(last))
    assert last["similarity/gap"] == pytest.approx(last["similarity/pos"] - last["similarity/neg"])
    with open(out / "config.yaml") as f:
        text = f.read()
    assert "META_ARCHITECTURE: TinyReID" in text and "WIDTH: 8" in text
    saved = re.search(r"^PLUGINS:\n((?:- .*\n)+)", text, flags=re.M).group(1)
    names = [os.path.basename(x[2:].strip()) for x in saved.splitlines()]
    assert names == ["my_reid", "my_trainer" if run == "env" else "my_trainer.py"]


def test_ddp_run_used_two_processes(project):
    folder, _ = project
    with open(folder / "output" / "flag_ddp" / "log.txt") as f:
        assert "World size: 2" in f.read()


def test_saved_config_alone_reloads_the_plugins(project):
    folder, _ = project
    with open(folder / "output" / "key_eval" / "eval_results.json") as f:
        res = json.load(f)["my_shop_test"]
    assert set(res) == {"reid", "similarity"} and 0 <= res["reid"]["mAP"] <= 100
