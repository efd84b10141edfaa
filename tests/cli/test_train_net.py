"""reid_plugins/cli/train_net.py (tools/train_net.py) end to end on a tiny synthetic
multi-domain benchmark."""

import json
import os

import pytest

from reid_plugins.data.synthetic_reid import generate_synthetic_reid
from tests._testing import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_train_net():
    return load_tool("train_net")


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    generate_synthetic_reid(
        str(root),
        num_train_ids=6,
        num_test_ids=4,
        images_per_id_per_cam=2,
        num_cams=2,
        num_distractors=1,
        num_junk=1,
        progress=False,
    )
    return str(root)


TINY = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.BACKBONE.BASE_WIDTH",
    "8",
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.STEPS",
    "[3]",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.IMS_PER_BATCH",
    "8",
    "DATALOADER.NUM_INSTANCE",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "TEST.IMS_PER_BATCH",
    "32",
    "LOG_PERIOD",
    "1",
    "INPUT.SIZE_TRAIN",
    "[32,16]",
    "INPUT.SIZE_TEST",
    "[32,16]",
]


def test_train_resume_and_eval_only(tiny_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("REID_DATASETS", tiny_synthetic)
    train_net = _load_train_net()
    out = str(tmp_path / "out")
    cfg_file = os.path.join(REPO, "projects", "baseline", "synthetic_dg.yaml")
    args = ["--config-file", cfg_file] + TINY + ["OUTPUT_DIR", out]

    results = train_net.main(train_net.default_argument_parser().parse_args(args))
    reid = results["reid"]
    for k in ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"):
        assert 0.0 <= reid[k] <= 100.0
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert os.path.isfile(os.path.join(out, "config.yaml"))
    with open(os.path.join(out, "metrics.json")) as f:
        lines = [json.loads(x) for x in f]
    assert any("loss_memory" in x for x in lines) and any("reid/mAP" in x for x in lines)
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(out))

    # --resume after completion: nothing left to train, the last checkpoint is loaded
    trainer_results = train_net.main(
        train_net.default_argument_parser().parse_args(args[:2] + ["--resume"] + args[2:])
    )
    assert trainer_results is None or "reid" in trainer_results

    # --eval-only reproduces the metrics of the final model
    ev = train_net.main(
        train_net.default_argument_parser().parse_args(
            args[:2]
            + ["--eval-only"]
            + args[2:]
            + ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]
        )
    )
    assert ev["reid"]["mAP"] == pytest.approx(reid["mAP"], abs=1e-6)


def test_unimportable_plugin_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """``--plugin`` / ``PLUGINS`` / ``$REID_PLUGINS`` naming a missing module: one line on
    stderr naming it and where it was listed, exit status 2, nothing built."""
    from reid_plugins.cli import train_net

    monkeypatch.delenv("REID_PLUGINS", raising=False)
    monkeypatch.delenv("REID_DEBUG", raising=False)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("PLUGINS: [no_such_plugin_b]\n")
    cases = [
        (["--plugin", "no_such_plugin_a"], {}, "(from --plugin)"),
        (["--config-file", str(cfg_file)], {}, f"(from PLUGINS in '{cfg_file}')"),
        ([], {"REID_PLUGINS": "no_such_plugin_c"}, "(from $REID_PLUGINS)"),
    ]
    for argv, env, where in cases:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(SystemExit) as e:
            train_net.run(argv + ["OUTPUT_DIR", str(tmp_path / "out")])
        assert e.value.code == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("ERROR: cannot import plugin 'no_such_plugin_")
        assert where in err[0] and "ModuleNotFoundError" in err[0]
    assert not (tmp_path / "out").exists()


def test_console_scripts_are_the_tools():
    """``[project.scripts]`` name each ``reid_plugins.cli`` module's ``run`` (=
    ``run_cli(command)``); the ``tools/<name>.py`` wrappers run the same ``command``."""
    import importlib
    import re
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert {"reid-train", "reid-demo", "reid-export", "reid-check-dataset"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert func == "run" and callable(getattr(importlib.import_module(module), func)), name
        tool = os.path.join(REPO, "tools", module.rsplit(".", 1)[1] + ".py")
        with open(tool) as f:
            text = f.read()
        assert re.search(rf"from {re.escape(module)} import command\b", text), tool
        assert "run_cli(command)" in text, tool
