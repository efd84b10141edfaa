"""Checkpoints written before the one-folder-per-method restructure still load: every built-in
meta-architecture built from the synthetic configs has exactly the state-dict keys and shapes
that main@f558bff's code had (frozen in ``fixtures/state_dict_keys_f558bff.json``, made by
``fixtures/gen_state_dict_keys.py`` from that commit), and a checkpoint file with those keys
loads into today's model with every tensor in place."""

import json
import os

import pytest
import torch

from reid_plugins.checkpoint import Checkpointer
from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.modeling import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with open(os.path.join(os.path.dirname(__file__), "fixtures", "state_dict_keys_f558bff.json")) as f:
    OLD = json.load(f)


def _build(rel: str, training: bool = True):
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(os.path.join(REPO, rel))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    if cfg.MODEL.META_ARCHITECTURE == "TDN":
        cfg.MODEL.TDN.TEACHER.ENABLED = False  # as when the fixture was made
    counts = OLD["configs"][rel]["num_pids_per_domain"] if training else None
    return cfg, build_model(cfg, counts)


def _old_state_dict(rel: str):
    entry = OLD["configs"][rel]
    shapes = OLD["state_dicts"][entry["state_dict"]]
    return {k: [int(x) for x in s.split(",") if x] for k, s in shapes.items()}


def test_every_synthetic_config_is_covered():
    found = sorted(
        os.path.relpath(os.path.join(d, f), REPO)
        for d, _, files in os.walk(os.path.join(REPO, "projects"))
        for f in files
        if "synthetic" in f and f.endswith(".yaml")
    )
    # every synthetic config of f558bff still exists (configs added since have no old checkpoints)
    assert set(OLD["configs"]) <= set(found)
    metas = {c["meta_architecture"] for c in OLD["configs"].values()}
    assert metas == {"ReIDBaseline", "M3L", "GMN", "OIMSearch", "TDN"}


@pytest.mark.parametrize("rel", sorted(OLD["configs"]))
def test_state_dict_keys_and_shapes_unchanged(rel):
    cfg, model = _build(rel)
    assert cfg.MODEL.META_ARCHITECTURE == OLD["configs"][rel]["meta_architecture"]
    now = {k: list(v.shape) for k, v in model.state_dict().items()}
    old = _old_state_dict(rel)
    assert sorted(set(old) - set(now)) == [] and sorted(set(now) - set(old)) == []
    assert {k: s for k, s in now.items() if old[k] != s} == {}


@pytest.mark.parametrize("rel", ["projects/m3l/synthetic_m3l.yaml", "projects/tdn/synthetic.yaml"])
def test_old_checkpoint_file_loads_every_tensor(rel, tmp_path):
    g = torch.Generator().manual_seed(0)
    saved = {}
    _, model = _build(rel)
    for k, v in model.state_dict().items():  # a checkpoint with the old names and shapes
        assert list(v.shape) == _old_state_dict(rel)[k]
        saved[k] = (torch.rand(v.shape, generator=g) * 10).to(v.dtype)
    path = str(tmp_path / "old.pth")
    torch.save({"model": saved, "iteration": 7}, path)
    Checkpointer(model).load(path, checkpointables=[])
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    # an inference model (--eval-only, demo, export) takes the same file, less the training parts
    _, infer = _build(rel, training=False)
    Checkpointer(infer).load(path, checkpointables=[])
    for k, v in infer.state_dict().items():
        assert torch.equal(v, saved[k]), k
