"""Every entry point under ``tools/``: ``setup_environment()`` (OMP_WAIT_POLICY=PASSIVE unless
set) runs before torch is imported, and ``main`` runs through ``run_cli`` (one-line user
errors). Checked on the source (cheap) and, for one tool, in a subprocess."""

import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from reid_plugins.utils.env import ENV_DEFAULTS, setup_environment

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = sorted(glob.glob(os.path.join(REPO, "tools", "*.py")))
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _module_of(node) -> str:
    if isinstance(node, ast.Import):
        return node.names[0].name
    return node.module or ""


@pytest.mark.parametrize("path", TOOLS, ids=[os.path.basename(p) for p in TOOLS])
def test_tool_sets_the_environment_first_and_runs_through_run_cli(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    setup_line = None
    for node in tree.body:  # module level, in order
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "setup_environment"
        ):
            setup_line = node.lineno
            break
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mod = _module_of(node)
            allowed = mod.split(".")[0] in STDLIB or mod == "reid_plugins.utils.env"
            assert allowed, f"line {node.lineno}: '{mod}' imported before setup_environment()"
    assert setup_line is not None, "setup_environment() is not called at module level"
    main_block = [
        n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
    ]
    assert main_block and "run_cli(" in ast.unparse(main_block[-1]), "__main__ must use run_cli"


def test_setup_environment_respects_the_user(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    setup_environment()
    assert os.environ["OMP_WAIT_POLICY"] == ENV_DEFAULTS["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    setup_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


PROBE = """
import json, os, runpy, sys
seen = {}
class Spy:  # records OMP_WAIT_POLICY when torch is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "torch" not in seen:
            seen["torch"] = os.environ.get("OMP_WAIT_POLICY")
sys.meta_path.insert(0, Spy())
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print(json.dumps(seen))
"""


def test_train_net_sets_the_policy_before_torch_is_imported(user_value=None):
    """(A user's own value is kept: see ``test_interrupt.py``, whose run sets ACTIVE.)"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    tool = os.path.join(REPO, "tools", "train_net.py")
    out = subprocess.run([sys.executable, "-c", PROBE, tool], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "--overwrite" in out.stdout and "--debug" in out.stdout  # the --help text
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"torch": user_value or "PASSIVE"}
