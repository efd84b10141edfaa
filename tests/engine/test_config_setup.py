"""reid_plugins/engine/config_setup.py: ``setup_cfg`` imports the plugins before merging the
file (a plugin may add the keys the file uses), records them in ``cfg.PLUGINS`` so that the
dumped config reloads them, and ``--plugin`` is on the common command line."""

import os
import sys
import uuid

import pytest

import reid_plugins.config as config_pkg
from reid_plugins.config import ConfigError
from reid_plugins.engine import default_argument_parser, import_cfg_plugins, setup_cfg
from reid_plugins.modeling import BACKBONE_REGISTRY, build_backbone
from reid_plugins.utils import plugins

PLUGIN = """
from torch import nn
from reid_plugins.config import CfgNode as CN, add_subtree, register_config_adder
from reid_plugins.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec

@register_config_adder
def add_{key}_config(cfg):
    add_subtree(cfg.MODEL, "{KEY}", CN({{"WIDTH": 4}}))

class Net(Backbone):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self._out_features = ["res5"]
        self._out_feature_channels = {{"res5": width}}
        self._out_feature_strides = {{"res5": 1}}

    def forward(self, x):
        return {{"res5": self.conv(x)}}

@BACKBONE_REGISTRY.register()
def build_{key}(cfg, input_shape: ShapeSpec):
    return Net(cfg.MODEL.{KEY}.WIDTH)
"""


@pytest.fixture
def plugin_file(tmp_path):
    """A plugin file adding ``MODEL.<KEY>.WIDTH`` and backbone ``build_<key>``; everything it
    registers is forgotten afterwards (as in a fresh process)."""
    key = f"tiny_{uuid.uuid4().hex[:6]}"
    path = tmp_path / "plugs" / f"{key}_plugin.py"
    path.parent.mkdir()
    path.write_text(PLUGIN.format(key=key, KEY=key.upper()))
    adders, backbones, mods = list(config_pkg._CONFIG_ADDERS), dict(BACKBONE_REGISTRY._obj_map), set(sys.modules)  # fmt: skip

    def forget():
        config_pkg._CONFIG_ADDERS[:] = adders
        BACKBONE_REGISTRY._obj_map.clear()
        BACKBONE_REGISTRY._obj_map.update(backbones)
        for m in set(sys.modules) - mods:
            del sys.modules[m]
        plugins._FILE_PLUGINS.clear()

    yield key, str(path), forget
    forget()


def _yaml(path, text):
    path.write_text(text)
    return str(path)


def test_plugins_key_is_read_before_the_file_is_merged(tmp_path, plugin_file, monkeypatch):
    key, path, forget = plugin_file
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    KEY = key.upper()
    _yaml(tmp_path / "base.yaml", f"PLUGINS: [plugs/{os.path.basename(path)}]\n")
    cfg_file = _yaml(
        tmp_path / "my.yaml",
        f"_BASE_: base.yaml\nMODEL:\n  BACKBONE: {{NAME: build_{key}}}\n  {KEY}: {{WIDTH: 6}}\n",
    )
    args = default_argument_parser().parse_args(
        ["--config-file", cfg_file, f"MODEL.{KEY}.WIDTH", "5"]
    )
    cfg = setup_cfg(args)
    assert cfg.MODEL[KEY].WIDTH == 5 and cfg.PLUGINS == [path]
    assert build_backbone(cfg).conv.out_channels == 5

    # the dumped config alone reloads the plugin in a fresh process
    dumped = _yaml(tmp_path / "dumped.yaml", cfg.dump())
    forget()
    assert setup_cfg(config_file=dumped, opts=[]).MODEL[KEY].WIDTH == 5
    forget()
    # ... and without the plugin the same file is an unknown key
    with pytest.raises(ConfigError, match=f"MODEL.{KEY}"):
        setup_cfg(config_file=_yaml(tmp_path / "plain.yaml", f"MODEL: {{{KEY}: {{WIDTH: 6}}}}\n"))


@pytest.mark.parametrize("form", ["--plugin", "env", "override"])
def test_flag_env_and_override_forms(tmp_path, plugin_file, monkeypatch, form):
    key, path, _ = plugin_file
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    argv = [f"MODEL.{key.upper()}.WIDTH", "3"]
    if form == "--plugin":
        argv = ["--plugin", path] + argv
    elif form == "env":
        monkeypatch.setenv(plugins.ENV_VAR, os.pathsep.join(["json", path]))
    else:
        argv = ["PLUGINS", f"['{path}']"] + argv
    cfg = setup_cfg(default_argument_parser().parse_args(argv))
    assert cfg.MODEL[key.upper()].WIDTH == 3
    assert cfg.PLUGINS == (["json", path] if form == "env" else [path])


def test_import_cfg_plugins_in_a_fresh_worker(plugin_file, monkeypatch):
    key, path, forget = plugin_file
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    cfg = setup_cfg(plugins=[path], config_file="", opts=[])
    forget()
    assert f"build_{key}" not in BACKBONE_REGISTRY
    assert import_cfg_plugins(cfg) == [path]
    assert f"build_{key}" in BACKBONE_REGISTRY


def test_unimportable_plugin_names_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    cfg_file = _yaml(tmp_path / "c.yaml", "PLUGINS: [no_such_module_zz]\n")
    with pytest.raises(plugins.PluginError) as e:
        setup_cfg(config_file=cfg_file, opts=[])
    assert str(e.value) == (
        f"cannot import plugin 'no_such_module_zz' (from PLUGINS in '{cfg_file}'): "
        "ModuleNotFoundError: No module named 'no_such_module_zz'"
    )
