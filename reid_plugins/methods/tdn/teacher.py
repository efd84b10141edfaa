"""The frozen ReID teacher of TDN: built from its own config file and checkpoint.

Any registered ReID meta-architecture can be the teacher (TDN Table IV) as long as its eval
forward takes ReID inputs (``[{"image": (3, h, w) 0-255 RGB}]``) and returns
``[{"feature": (D,)}]`` (the ReID model contract of the toolbox).
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from reid_plugins.checkpoint import read_state_dict

__all__ = [
    "build_teacher",
    "freeze_teacher",
    "load_checkpoint_state",
    "teacher_feature_dim",
    "teacher_features",
]

logger = logging.getLogger(__name__)


def load_checkpoint_state(path: str) -> Dict[str, torch.Tensor]:
    """The model state dict of the teacher checkpoint ``path``
    (:func:`reid_plugins.checkpoint.read_state_dict` with the teacher's key and hint).

    Raises:
        FileNotFoundError: ``path`` does not exist (names ``MODEL.TDN.TEACHER.WEIGHTS``).
        ValueError: the file holds no state dict.
    """
    return read_state_dict(
        path,
        key="MODEL.TDN.TEACHER.WEIGHTS",
        hint="Train the teacher on person crops first, e.g. python tools/train_net.py "
        "--config-file projects/tdn/teacher_prw.yaml (or run tools/run_tdn_pipeline.py for the "
        "synthetic data), or set MODEL.TDN.TEACHER.ENABLED False.",
    )


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter; returns ``teacher``."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_teacher(teacher_cfg_node, *, device="cpu") -> Tuple[nn.Module, Tuple[int, int]]:
    """Build the frozen teacher of ``MODEL.TDN.TEACHER`` (``teacher_cfg_node``) for training.

    The teacher's config file is parsed once (plus ``OPTS``, KEY VALUE overrides) and the
    teacher is built with the ordinary
    :func:`~reid_plugins.modeling.build_model` of that config as an inference model (no
    identities given: no classifier); its ``MODEL.BACKBONE.PRETRAIN_PATH`` is ignored (the
    checkpoint overrides it) and checkpoint entries the inference model has no use for (e.g.
    the classifier) are skipped. Only :class:`~reid_plugins.methods.tdn.trainer.TDNTrainer`
    calls this: inference never builds the teacher.

    Returns:
        ``(teacher, (h, w))``: the frozen teacher (eval mode, no gradients) on ``device`` and
        the size of its input crops (``INPUT_SIZE`` if set, else the teacher config's
        ``INPUT.SIZE_TEST``).

    Raises:
        ValueError: empty paths, a TDN config as teacher, or a checkpoint that does not fit.
        FileNotFoundError: a file is missing (the message names the config key).
    """
    from reid_plugins.config import ConfigError, add_all_configs, get_cfg
    from reid_plugins.modeling.meta_arch.build import build_model

    config_file, weights = teacher_cfg_node.CONFIG_FILE, teacher_cfg_node.WEIGHTS
    if not config_file:
        raise ValueError(
            "MODEL.TDN.TEACHER.ENABLED is True but MODEL.TDN.TEACHER.CONFIG_FILE is empty: give "
            "the teacher's ReID config (e.g. projects/tdn/teacher_prw.yaml)"
        )
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"MODEL.TDN.TEACHER.CONFIG_FILE='{config_file}' does not exist")
    if not weights:
        raise ValueError(
            "MODEL.TDN.TEACHER.WEIGHTS is empty: give the trained teacher checkpoint (or set "
            "MODEL.TDN.TEACHER.ENABLED False)"
        )
    state = load_checkpoint_state(weights)
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(config_file)
    opts = list(teacher_cfg_node.get("OPTS", []))
    try:  # CfgNode.merge_from_list checks the pairs and names a bad key or value
        cfg.merge_from_list(opts)
    except ConfigError as e:
        raise ValueError(f"MODEL.TDN.TEACHER.OPTS {opts}: {e}") from e
    if cfg.MODEL.META_ARCHITECTURE == "TDN":
        raise ValueError(
            f"MODEL.TDN.TEACHER.CONFIG_FILE='{config_file}' is a TDN config; the teacher must be "
            "a ReID model (e.g. ReIDBaseline)"
        )
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    if "FROM_SCRATCH" in cfg.MODEL.BACKBONE:
        cfg.MODEL.BACKBONE.FROM_SCRATCH = True  # the checkpoint provides every weight
    cfg.MODEL.DEVICE = str(device)
    try:
        teacher = build_model(cfg)
    except KeyError as e:
        raise KeyError(f"Teacher config '{config_file}': {e.args[0]}") from e
    own = teacher.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    mis_shaped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or mis_shaped:
        raise ValueError(
            f"Teacher checkpoint '{weights}' does not fit the model of '{config_file}': "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, shape mismatch "
            f"{mis_shaped[:8]}"
        )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        logger.info(
            "Teacher: ignored %d checkpoint entries (e.g. %s)", len(unexpected), unexpected[:3]
        )
    teacher.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    teacher.to(torch.device(str(device)))
    logger.info(
        "TDN teacher: %s from '%s' with weights '%s'",
        cfg.MODEL.META_ARCHITECTURE, config_file, weights,
    )  # fmt: skip
    size = teacher_cfg_node.INPUT_SIZE
    if size:
        if len(size) != 2:
            raise ValueError(f"MODEL.TDN.TEACHER.INPUT_SIZE must be [height, width], got {size}")
        input_size = (int(size[0]), int(size[1]))
    else:
        input_size = (int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1]))
    return freeze_teacher(teacher), input_size


@torch.no_grad()
def teacher_features(teacher: nn.Module, crops: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """L2-normalised teacher features ``(R, D)`` of 0-255 RGB crops ``(R, 3, h, w)``.

    The teacher is put (back) in eval mode; crops are fed in chunks of ``chunk``.
    """
    teacher.eval()
    out: List[torch.Tensor] = []
    for i in range(0, crops.shape[0], max(1, int(chunk))):
        part = crops[i : i + chunk]
        results = teacher([{"image": c} for c in part])
        out.append(torch.stack([_feature(r) for r in results]))
    if not out:
        return crops.new_zeros((0, teacher_feature_dim(teacher, tuple(crops.shape[-2:]))))
    return F.normalize(torch.cat(out).float(), dim=1)


def _feature(result) -> torch.Tensor:
    if isinstance(result, dict):
        if "feature" not in result:
            raise KeyError(f"Teacher output lacks 'feature' (keys: {sorted(result)})")
        result = result["feature"]
    return result.reshape(-1)


def teacher_feature_dim(teacher: nn.Module, input_size: Sequence[int], device=None) -> int:
    """Feature size of ``teacher`` (one forward of a grey crop of ``input_size``)."""
    device = device or next(iter(teacher.buffers()), torch.zeros(())).device
    crop = torch.full((1, 3, int(input_size[0]), int(input_size[1])), 128.0, device=device)
    return int(teacher_features(teacher, crop).shape[1])
