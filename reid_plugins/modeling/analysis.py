"""FLOPs and parameters of models and of their declared parts (``tools/analyze_model.py``).

Counting: fvcore's ``FlopCountAnalysis`` (one forward, eval mode, no grad), which counts one
fused multiply-add as one flop; here 1 MAC = 2 FLOPs, so fvcore's count is doubled.
Element-wise ops (ReLU, additions, FrozenBN's affine) are not counted; BatchNorm /
InstanceNorm are (fvcore's defaults).

**Parts contract.** Every registered meta-architecture is counted as a whole
(:func:`whole_model_gflops` runs its ``inference``). A model may also *declare parts* by
defining::

    def analysis_parts(self, image_hw, num_rois=128, num_boxes=10) -> List[ModelPart]

returning one :class:`ModelPart` per component (a callable, an example input, how many times
it runs per image, the modules holding its parameters). ``image_hw`` is the analysed image
size, ``num_rois`` / ``num_boxes`` the per-image workload of per-RoI / per-box parts (TDN's
paper: 128 RPN RoIs, 10 final boxes); models without such parts ignore them.
:func:`count_parts` counts them; ``tools/analyze_model.py`` prints the per-part table only
for models that declare parts. TDN and OIM* declare theirs (:func:`person_search_parts`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "ModelPart",
    "part_call",
    "gflops",
    "num_params",
    "count_parts",
    "whole_model_gflops",
    "person_search_parts",
]


class ModelPart(NamedTuple):
    """One declared component of a model.

    Attributes:
        name: row name (e.g. ``"part1"``).
        fn: the computation, ``fn(example)``: a module (wrap a function of a model with
            :func:`part_call`, so that the tracer sees the model's parameters).
        example: the input it is counted on.
        count: how many times it runs per image (e.g. once per RoI).
        params: modules whose parameters belong to the part (shared ones counted once).
        input: human description of one unit's input (e.g. ``"7x7x512"``).
        batch: how many units ``example`` holds (the count is divided by it; e.g. 2 when a
            BatchNorm in eval mode needs a batch of 2).
    """

    name: str
    fn: nn.Module
    example: torch.Tensor
    count: int
    params: Sequence[Optional[nn.Module]]
    input: str
    batch: int = 1


class _Call(nn.Module):
    """Wrap ``fn(x)`` as a module for fvcore's tracer (``owner`` keeps the parameters)."""

    def __init__(self, owner: Optional[nn.Module], fn: Callable) -> None:
        super().__init__()
        self.owner = owner
        self._fn = fn

    def forward(self, x):
        out = self._fn(x)
        return tuple(_tensors(out)) if not isinstance(out, torch.Tensor) else out


def part_call(owner: nn.Module, fn: Callable) -> nn.Module:
    """``fn`` (a function using ``owner``'s parameters) as a module for :class:`ModelPart`."""
    return _Call(owner, fn)


def _tensors(out: Any) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    return []


def gflops(module: nn.Module, x: torch.Tensor) -> float:
    """fvcore FLOPs of ``module(x)`` in GFLOPs with 1 MAC = 2 FLOPs (eval mode, no grad)."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)  # per-op "unsupported" chatter
    module.eval()
    with torch.no_grad():
        analysis = FlopCountAnalysis(module, (x,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return 2.0 * analysis.total() / 1e9


def num_params(*modules: Optional[nn.Module]) -> int:
    """Number of distinct parameters of the modules (None skipped)."""
    seen = {}
    for m in modules:
        if m is not None:
            for p in m.parameters():
                seen[id(p)] = p.numel()
    return sum(seen.values())


def count_parts(
    parts: Sequence[ModelPart], reuse: Optional[Dict[str, Dict]] = None
) -> Dict[str, Dict]:
    """``{name: {"gflops_per_unit", "count", "gflops", "params", "input"}}`` of the parts.

    Args:
        parts: from a model's ``analysis_parts``.
        reuse: rows already counted (e.g. a Part-1 of the same configuration), used as is.
    """
    rows: Dict[str, Dict] = {}
    for p in parts:
        if reuse and p.name in reuse:
            rows[p.name] = dict(reuse[p.name])
            continue
        g = gflops(p.fn, p.example) / p.batch
        rows[p.name] = dict(gflops_per_unit=g, count=p.count, gflops=g * p.count,
                            params=num_params(*p.params), input=p.input)  # fmt: skip
    return rows


def whole_model_gflops(model: nn.Module, images: torch.Tensor) -> float:
    """GFLOPs of ``model.inference`` on ``images`` (N, 3, H, W) given as one input per image
    (``[{"image": img}, ...]``). For detectors the count depends on how many boxes the
    model keeps for this input."""
    model.eval()
    return gflops(_Call(model, lambda x: model.inference([{"image": img} for img in x])), images)


def _stages(backbone: nn.Module, names: Sequence[str]) -> List[nn.Module]:
    return [getattr(backbone, n) for n in names]


def person_search_parts(
    model: nn.Module, image_hw: Tuple[int, int], num_rois: int, num_boxes: int
) -> List[ModelPart]:
    """Parts of TDN or OIM* (TDN paper, Table VII): Part-1 on the image, the RPN head on its
    feature map, then

    * TDN: the RoI head per RPN RoI, the KTB (if any) and Part-2 + re-ID neck per final box;
    * OIM*: Part-2 and the OIM heads (classifier, box regressor, embedding) per RPN RoI.
    """
    from .backbone.resnet import STAGE_NAMES

    i = STAGE_NAMES.index(model.part1_end)
    p1, p2 = list(STAGE_NAMES[: i + 1]), list(STAGE_NAMES[i + 1 :])
    c1 = model.backbone.stage_shape(model.part1_end).channels
    stride = model.part1_stride
    h, w = image_hw
    feat = torch.zeros(1, c1, math.ceil(h / stride), math.ceil(w / stride))
    parts = [
        ModelPart("part1", part_call(model, model.part1), torch.zeros(1, 3, h, w), 1,
                  _stages(model.backbone, p1), f"{w}x{h}x3"),
        ModelPart("rpn_head", part_call(model, lambda f: model.rpn.head([f])), feat, 1, [model.rpn.head],
                  f"{feat.shape[3]}x{feat.shape[2]}x{c1}"),
    ]  # fmt: skip
    c5 = model.backbone.stage_shape("res5").channels
    if hasattr(model, "ktb"):  # TDN
        bh, bw = model.box_head.resolution
        rh, rw = model.reid_resolution
        parts.append(ModelPart("roi_head", model.box_head, torch.zeros(1, c1, bh, bw), num_rois,
                               [model.box_head], f"{bh}x{bw}x{c1}"))  # fmt: skip
        if model.ktb is not None:
            kh, kw = model.ktb.input_size
            parts.append(ModelPart("ktb", model.ktb, torch.zeros(1, 3, kh, kw), num_boxes,
                                   [model.ktb], f"{kh}x{kw}x3"))  # fmt: skip
        parts.append(ModelPart("part2", part_call(model, model.part2), torch.zeros(1, c1, rh, rw), num_boxes,
                               _stages(model.backbone, p2), f"{rh}x{rw}x{c1}"))  # fmt: skip
        parts.append(ModelPart("reid_neck", part_call(model, lambda x: model.neck(x)["feature"]),
                               torch.zeros(2, c5, 1, 1), num_boxes, [model.neck],
                               f"GAP+BN {c5}", batch=2))  # fmt: skip
        return parts
    rh, rw = model.pooler_resolution  # OIM*

    def heads(x):
        v = x.mean(dim=(2, 3))
        return torch.cat([model.cls_score(v), model.bbox_pred(v), model.embedding(v)], dim=1)

    parts.append(ModelPart("part2", part_call(model, lambda x: model.backbone.forward_stages(x, p2[0], "res5")),
                           torch.zeros(1, c1, rh, rw), num_rois, _stages(model.backbone, p2),
                           f"{rh}x{rw}x{c1}"))  # fmt: skip
    parts.append(ModelPart("oim_heads", part_call(model, heads), torch.zeros(2, c5, 1, 1), num_rois,
                           [model.cls_score, model.bbox_pred, model.embedding], f"GAP + FC {c5}",
                           batch=2))  # fmt: skip
    return parts
