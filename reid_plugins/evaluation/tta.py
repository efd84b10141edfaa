"""Test-time augmentation for ReID models: horizontal-flip feature averaging."""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FlipTestWrapper", "maybe_wrap_flip"]


class FlipTestWrapper(nn.Module):
    """Averages a ReID model's features over each image and its horizontal mirror.

    In eval mode, ``forward(batched_inputs)`` runs ``model`` on the inputs and on shallow
    copies whose ``"image"`` (``C x H x W``) is flipped along the width axis (a new tensor: the
    inputs are never modified), then returns, per input, the model's output dict with
    ``"feature"`` replaced by ``normalize((f + f_flip) / 2)`` (L2). In training mode the call
    is forwarded to ``model`` unchanged.

    Args:
        model: a ReID model taking ``list[dict]`` (each with ``"image"``) and returning one
            dict with a 1-D ``"feature"`` per input in eval mode.
    """

    def __init__(self, *, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> "FlipTestWrapper":
        """Wrap ``model`` (no option besides ``TEST.FLIP_AUG``, see :func:`maybe_wrap_flip`)."""
        return cls(model=model)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        if self.training:
            return self.model(batched_inputs)
        flipped = []
        for i, d in enumerate(batched_inputs):
            img = d.get("image")
            if not isinstance(img, torch.Tensor) or img.dim() < 2:
                raise ValueError(
                    f"FlipTestWrapper: input {i} ('{d.get('file_name', '?')}') needs an 'image' "
                    f"tensor of shape C x H x W, got {type(img).__name__}"
                )
            flipped.append({**d, "image": img.flip(-1)})
        outs = self.model(batched_inputs)
        outs_flip = self.model(flipped)
        if len(outs) != len(batched_inputs) or len(outs_flip) != len(batched_inputs):
            raise ValueError(
                f"FlipTestWrapper: the model returned {len(outs)}/{len(outs_flip)} outputs for "
                f"{len(batched_inputs)} inputs; it must return one dict per input in eval mode"
            )
        results = []
        for o, of in zip(outs, outs_flip):
            feat = F.normalize((o["feature"] + of["feature"]) / 2.0, p=2.0, dim=-1)
            results.append({**o, "feature": feat})
        return results


def maybe_wrap_flip(cfg, model: nn.Module) -> nn.Module:
    """``FlipTestWrapper`` around ``model`` if ``cfg.TEST.FLIP_AUG``, else ``model`` itself."""
    return FlipTestWrapper.from_config(cfg, model) if cfg.TEST.FLIP_AUG else model
