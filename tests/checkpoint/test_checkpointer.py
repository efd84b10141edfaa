"""Checkpointer recovery from interrupted runs: stale temp files, missing last_checkpoint."""

import logging
import os

import pytest
import torch
from torch import nn

from reid_plugins.checkpoint import Checkpointer, atomic_torch_save, stale_temp_files


def _model(value: float) -> nn.Module:
    m = nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(-value)
    return m


def _save(tmp_path, name: str, value: float) -> None:
    Checkpointer(_model(value), str(tmp_path)).save(name)


@pytest.fixture
def ckpt_log(caplog):
    caplog.set_level(logging.WARNING, logger="reid_plugins.checkpoint.checkpointer")
    return caplog


def test_stale_temp_files_are_removed_with_a_warning(tmp_path, ckpt_log):
    _save(tmp_path, "model_0000001", 1.0)
    debris = [tmp_path / ".model_0000002.pth.k3j2_x.tmp", tmp_path / ".last_checkpoint.ab12.tmp"]
    for d in debris:
        d.write_bytes(b"half a checkpoint")
    keep = [tmp_path / ".hidden_config", tmp_path / "notes.tmp"]  # not atomic-save debris
    for k in keep:
        k.write_text("x")
    assert stale_temp_files(str(tmp_path)) == sorted(str(d) for d in debris)

    Checkpointer(_model(0.0), str(tmp_path))

    assert not any(d.exists() for d in debris)
    assert all(k.exists() for k in keep) and (tmp_path / "model_0000001.pth").exists()
    assert "interrupted checkpoint save" in ckpt_log.text
    assert ".model_0000002.pth.k3j2_x.tmp" in ckpt_log.text


def test_non_writing_checkpointer_leaves_temp_files_alone(tmp_path):
    debris = tmp_path / ".model_0000002.pth.zz.tmp"
    debris.write_bytes(b"x")
    Checkpointer(_model(0.0), str(tmp_path), save_to_disk=False)  # e.g. a non-main rank
    assert debris.exists()


def test_atomic_save_leaves_no_temp_file(tmp_path):
    atomic_torch_save({"a": torch.ones(2)}, str(tmp_path / "x.pth"))
    assert stale_temp_files(str(tmp_path)) == []


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"model_0000002": 2.0, "model_0000011": 11.0, "model_0000005": 5.0}, 11.0),
        ({"model_0000002": 2.0, "model_final": 7.0, "model_0000005": 5.0}, 7.0),
    ],
)
def test_missing_last_checkpoint_resumes_from_the_newest_file(tmp_path, ckpt_log, files, expected):
    for name, value in files.items():
        _save(tmp_path, name, value)
    os.remove(tmp_path / "last_checkpoint")
    fresh = _model(0.0)
    ckpt = Checkpointer(fresh, str(tmp_path))
    assert ckpt.has_checkpoint()
    ckpt.resume_or_load("", resume=True)
    assert torch.all(fresh.weight == expected) and torch.all(fresh.bias == -expected)
    assert "last_checkpoint is missing" in ckpt_log.text
    newest = "model_final.pth" if "model_final" in files else "model_0000011.pth"
    assert newest in ckpt_log.text


def test_no_checkpoint_at_all_starts_from_scratch(tmp_path):
    (tmp_path / "log.txt").write_text("")
    fresh = _model(3.0)
    ckpt = Checkpointer(fresh, str(tmp_path))
    assert not ckpt.has_checkpoint()
    ckpt.resume_or_load("", resume=True)
    assert torch.all(fresh.weight == 3.0)


def test_last_checkpoint_wins_over_a_newer_looking_file(tmp_path):
    # last_checkpoint is the source of truth when it exists (e.g. a rolled-back run)
    _save(tmp_path, "model_0000009", 9.0)
    _save(tmp_path, "model_0000004", 4.0)  # tags model_0000004.pth
    fresh = _model(0.0)
    Checkpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert torch.all(fresh.weight == 4.0)
