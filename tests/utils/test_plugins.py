"""reid_plugins/utils/plugins.py: importing user modules by name, file or package folder, from
a config file's ``_BASE_`` chain, ``$REID_PLUGINS`` and entry points; one-line errors naming
where the plugin was listed."""

import os
import sys
import uuid

import pytest

from reid_plugins.utils import plugins


def _name(prefix="plug"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def restore_modules():
    """Forget the modules (and ``sys.path`` entries) a test's plugins added."""
    mods, path = set(sys.modules), list(sys.path)
    yield
    for m in set(sys.modules) - mods:
        del sys.modules[m]
    sys.path[:] = path
    plugins._FILE_PLUGINS.clear()


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_file_package_and_module_plugins_import_once(tmp_path, restore_modules, monkeypatch):
    f = _name()
    _write(tmp_path / f"{f}.py", "import sibling\nCOUNT = sibling.N\n")
    _write(tmp_path / "sibling.py", "N = 1\n")  # importable: the file's folder is on sys.path
    pkg = _name("pkg")
    _write(tmp_path / "lib" / pkg / "__init__.py", "from . import sub\n")
    _write(tmp_path / "lib" / pkg / "sub.py", "VALUE = 7\n")
    mod = _name("mod")
    _write(tmp_path / "path" / f"{mod}.py", "X = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path / "path"))
    monkeypatch.chdir(tmp_path)

    m = plugins.import_plugin(f"{f}.py")  # relative to the working directory
    assert m.COUNT == 1 and sys.modules[f] is m
    assert plugins.import_plugin(str(tmp_path / f"{f}.py")) is m  # second import: same module
    p = plugins.import_plugin(f"lib/{pkg}/")  # a package folder
    assert p.sub.VALUE == 7 and sys.modules[f"{pkg}.sub"] is p.sub
    assert plugins.import_plugin(mod).X == 3  # a module name on sys.path


def test_config_file_plugins_follow_base_chain_relative_to_each_file(tmp_path):
    _write(tmp_path / "base" / "base.yaml", "PLUGINS: [helpers/a.py, pkg.mod]\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base/base.yaml\nPLUGINS: [./b.py]\nSEED: 1\n")
    got = plugins.plugins_from_config_file(child)
    assert [s for s, _ in got] == [
        str(tmp_path / "base" / "helpers" / "a.py"),  # relative to base.yaml, bases first
        "pkg.mod",
        str(tmp_path / "b.py"),
    ]
    assert got[0][1] == f"PLUGINS in '{tmp_path / 'base' / 'base.yaml'}'"
    assert got[2][1] == f"PLUGINS in '{child}'"
    # a missing or broken file yields nothing here (merging it reports the error)
    assert plugins.plugins_from_config_file(str(tmp_path / "nope.yaml")) == []
    bad = _write(tmp_path / "bad.yaml", "PLUGINS: {a: 1}\n")
    with pytest.raises(plugins.PluginError, match="bad.yaml.*must be a list"):
        plugins.plugins_from_config_file(bad)


def test_env_var_and_opts_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {plugins.ENV_VAR: os.pathsep.join(["a.b", "", "x/c.py"])}
    assert plugins.plugins_from_env(env) == [
        ("a.b", "$REID_PLUGINS"),
        (str(tmp_path / "x" / "c.py"), "$REID_PLUGINS"),
    ]
    got = plugins.plugins_from_opts(["SEED", "1", "PLUGINS", "['m.n', 'd.py']"])
    assert [s for s, _ in got] == ["m.n", str(tmp_path / "d.py")]
    assert [s for s, _ in plugins.plugins_from_opts(["PLUGINS", "m.n"])] == ["m.n"]


@pytest.mark.parametrize(
    "spec, source, expected",
    [
        ("no_such_pkg_zz.mod", "--plugin", "cannot import plugin 'no_such_pkg_zz.mod' (from "
         "--plugin): ModuleNotFoundError: No module named 'no_such_pkg_zz'"),
        ("missing/plug.py", "$REID_PLUGINS", "plugin file '{tmp}/missing/plug.py' (from "
         "$REID_PLUGINS) does not exist"),
    ],
)  # fmt: skip
def test_unimportable_plugin_is_one_line_naming_the_source(
    tmp_path, monkeypatch, spec, source, expected
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(plugins.PluginError) as e:
        plugins.import_plugin(spec, source)
    assert str(e.value) == expected.format(tmp=tmp_path)


def test_plugin_raising_names_plugin_and_cause(tmp_path, restore_modules):
    name = _name()
    path = _write(tmp_path / f"{name}.py", "import os\nraise RuntimeError('bad\\nthing')\n")
    with pytest.raises(plugins.PluginError) as e:
        plugins.import_plugin(path, "PLUGINS in 'x.yaml'")
    msg = str(e.value)
    assert msg == f"cannot import plugin '{path}' (from PLUGINS in 'x.yaml'): RuntimeError: bad"
    assert isinstance(e.value.__cause__, RuntimeError)  # the traceback is kept for --debug
    assert name not in sys.modules  # a failed import leaves nothing behind
    folder = _write(tmp_path / "notpkg" / "x.txt", "")
    with pytest.raises(plugins.PluginError, match="is not a package"):
        plugins.import_plugin(os.path.dirname(folder))


def test_entry_point_group_members_are_imported(tmp_path, restore_modules, monkeypatch):
    """A pip-installed plugin declares ``[project.entry-points."reid_plugins.plugins"]``."""
    mod = _name("ep")
    _write(tmp_path / f"{mod}.py", "LOADED = True\n")
    dist = tmp_path / "my_plugin_dist-1.0.dist-info"
    _write(dist / "METADATA", "Metadata-Version: 2.1\nName: my-plugin-dist\nVersion: 1.0\n")
    _write(dist / "entry_points.txt", f"[reid_plugins.plugins]\nmine = {mod}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = plugins.load_entry_point_plugins()
    assert mod in names and sys.modules[mod].LOADED
    _write(dist / "entry_points.txt", "[reid_plugins.plugins]\nbroken = no_such_mod_zz\n")
    with pytest.raises(plugins.PluginError, match="entry point 'broken' of distribution"):
        plugins.load_entry_point_plugins()
