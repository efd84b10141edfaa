"""ONNX export of the one-step person-search models (TDN, OIM*), checked with onnxruntime.

Both graphs take **one scene image** ``images`` ``(1, 3, H, W)`` float32 RGB 0-255 of the fixed
size given at export (the image already resized as the model's test transform does, e.g. to
``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``); padding to ``SIZE_DIVISIBILITY`` happens inside
the graph. Boxes are ``(x1, y1, x2, y2)`` in that image's pixels (divide by the resize factor
for the original image). Detections are filtered exactly as the PyTorch model does
(``ROI_HEADS.SCORE_THRESH_TEST``, NMS, ``DETECTIONS_PER_IMAGE``).

* **TDN: two graphs** (Part-2 runs only on the final boxes, so the re-ID graph takes boxes):

  1. ``<name>.detector.onnx``: ``images -> boxes (K, 4), scores (K,), part1 (1, C, h, w)``
     (Part-1, RPN, RoI head, post-processing);
  2. ``<name>.reid.onnx``: ``images, part1, boxes (K, 4) -> features (K, D)`` (Part-1
     RoIAlign + KTB crop of the same image, Part-2, BN, L2 normalisation).

  Glue: run (1), feed its ``part1`` and ``boxes`` (or any boxes, e.g. a query box in the
  resized image) with the same ``images`` to (2); ``K >= 1``
  (:func:`run_tdn_onnx` does it).
* **OIM\\***: **one graph** ``<name>.onnx``: ``images -> boxes, scores, features`` (its
  features come from the same Part-2 pass as the box regression, on all proposals). A query
  box's feature is the re-ID head on that box: exported as ``<name>.query.onnx``:
  ``images, boxes -> features``.

:func:`export_person_search` writes the files, :func:`verify_person_search` compares
onnxruntime with the PyTorch model on an image (boxes, scores and features).
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList

from ..modeling.person_search import postprocess_detections
from ..modeling.person_search.common import OneStepSearchBase
from .onnx import save_checked_onnx

__all__ = [
    "PersonSearchDetectorGraph",
    "PersonSearchReIDGraph",
    "export_person_search",
    "is_person_search",
    "run_tdn_onnx",
    "verify_person_search",
]

logger = logging.getLogger(__name__)


def is_person_search(model: nn.Module) -> bool:
    """Whether ``model`` is a one-step person-search model (TDN, OIM*)."""
    return isinstance(model, OneStepSearchBase)


def _is_tdn(model) -> bool:
    return hasattr(model, "reid_branch") and hasattr(model, "box_predictions")


class _Normalise(nn.Module):
    def __init__(self, model: OneStepSearchBase, image_size: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.image_size = (int(image_size[0]), int(image_size[1]))
        div = max(1, model.size_divisibility)
        h, w = self.image_size
        self.pad = (0, -(-w // div) * div - w, 0, -(-h // div) * div - h)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.model.pixel_mean) / self.model.pixel_std
        return F.pad(x, self.pad) if any(self.pad) else x


class PersonSearchDetectorGraph(_Normalise):
    """``images (1, 3, H, W) -> boxes (K, 4), scores (K,), part1 | features``: Part-1, RPN,
    RoI head, post-processing of the model (TDN: the Part-1 map as third output; OIM*: the
    detections' re-ID features)."""

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, det = self.model, self.model.detector
        x = self.normalise(images)
        feats = m.part1(x)
        proposals, _ = m.rpn(ImageList(x, [self.image_size]), {"part1": feats})
        if _is_tdn(m):
            logits, deltas = m.box_predictions(feats, proposals)
        else:
            logits, deltas, emb = m.box_head(feats, proposals)
        boxes, scores, keep = postprocess_detections(
            proposals[0], logits, deltas, self.image_size, det.box_coder,
            score_thresh=det.score_thresh_test, nms_thresh=det.nms_thresh_test,
            detections_per_image=det.detections_per_image,
        )  # fmt: skip
        return boxes, scores, (feats if _is_tdn(m) else emb[keep])


class PersonSearchReIDGraph(_Normalise):
    """Re-ID features ``(K, D)`` (L2-normalised) of ``boxes (K, 4)`` in ``images``: TDN
    ``(images, part1, boxes)`` (Part-1 map from the detector graph); OIM* ``(images, boxes)``
    (Part-1 recomputed)."""

    def forward(self, images: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = self.normalise(images)
        if _is_tdn(m):
            part1, boxes = rest
            return F.normalize(m.reid_branch(x, part1, [boxes])["feature"], dim=1)
        (boxes,) = rest
        return m.box_head(m.part1(x), [boxes])[2]


def _export(module, args, path, input_names, output_names, dynamic_axes, opset) -> str:
    import onnx

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, buf, dynamo=False, opset_version=opset, input_names=input_names,
            output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True,
        )  # fmt: skip
    save_checked_onnx(onnx.load_from_string(buf.getvalue()), path)
    logger.info("Exported %s to %s (opset %d)", type(module).__name__, path, opset)
    return path


def _example(image_size, device, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = int(image_size[0]), int(image_size[1])
    return (torch.rand(1, 3, h, w, generator=g) * 255).to(device)


def export_person_search(
    model: OneStepSearchBase, output: str, *, image_size: Sequence[int], opset: int = 17
) -> Dict[str, str]:
    """Export ``model`` (put in eval mode) for images of ``image_size = (H, W)``.

    Args:
        output: ``<name>.onnx``; TDN writes ``<name>.detector.onnx`` and ``<name>.reid.onnx``,
            OIM* ``<name>.onnx`` and ``<name>.query.onnx`` (see the module docstring).

    Returns:
        ``{"detector": path, "reid": path}`` (TDN) or ``{"search": path, "query": path}``.
    """
    model.eval()
    device = model.pixel_mean.device
    image = _example(image_size, device)
    det = PersonSearchDetectorGraph(model, image_size).eval()
    reid = PersonSearchReIDGraph(model, image_size).eval()
    stem = output[:-5] if output.endswith(".onnx") else output
    k = {0: "num_boxes"}
    with torch.no_grad():
        boxes, _, third = det(image)
    if len(boxes) == 0:  # a box to trace the re-ID graph with
        boxes = torch.tensor([[0.0, 0.0, image.shape[-1] / 4, image.shape[-2] / 2]], device=device)
    if _is_tdn(model):
        paths = {
            "detector": _export(det, (image,), f"{stem}.detector.onnx", ["images"],
                                ["boxes", "scores", "part1"], {"boxes": k, "scores": k}, opset),
            "reid": _export(reid, (image, third, boxes), f"{stem}.reid.onnx",
                            ["images", "part1", "boxes"], ["features"],
                            {"boxes": k, "features": k}, opset),
        }  # fmt: skip
    else:
        paths = {
            "search": _export(det, (image,), f"{stem}.onnx", ["images"],
                              ["boxes", "scores", "features"],
                              {"boxes": k, "scores": k, "features": k}, opset),
            "query": _export(reid, (image, boxes), f"{stem}.query.onnx", ["images", "boxes"],
                             ["features"], {"boxes": k, "features": k}, opset),
        }  # fmt: skip
    return paths


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_tdn_onnx(detector_path: str, reid_path: str, image: np.ndarray) -> Dict[str, np.ndarray]:
    """The glue of TDN's two graphs: ``{"boxes", "scores", "features"}`` of one resized image
    ``(1, 3, H, W)`` float32 RGB 0-255."""
    boxes, scores, part1 = _session(detector_path).run(None, {"images": image})
    if len(boxes) == 0:
        return {"boxes": boxes, "scores": scores, "features": np.zeros((0, 0), np.float32)}
    feats = _session(reid_path).run(None, {"images": image, "part1": part1, "boxes": boxes})[0]
    return {"boxes": boxes, "scores": scores, "features": feats}


def verify_person_search(
    model: OneStepSearchBase,
    paths: Dict[str, str],
    *,
    image_size: Sequence[int],
    atol: float = 1e-4,
    box_atol: float = 1e-2,
    seed: int = 1,
) -> Dict[str, float]:
    """Run the exported graphs with onnxruntime and the PyTorch model (its own ``inference``
    and ``extract_query``) on a random image; returns the max abs differences of boxes,
    scores and features (detections and a query box); ``box_atol`` (pixels) for the boxes,
    ``atol`` for scores and features.

    Raises:
        RuntimeError: different numbers of detections, or a difference above ``atol``.
    """
    model.eval()
    image = _example(image_size, torch.device("cpu"), seed)
    h, w = int(image_size[0]), int(image_size[1])
    inputs = [{"image": image[0].to(model.pixel_mean.device), "height": h, "width": w}]
    with torch.no_grad():
        ref = model.inference(inputs)[0]
    x = image.numpy()
    if "detector" in paths:
        got = run_tdn_onnx(paths["detector"], paths["reid"], x)
    else:
        b, s, f = _session(paths["search"]).run(None, {"images": x})
        got = {"boxes": b, "scores": s, "features": f}
    if len(got["boxes"]) != len(ref["boxes"]):
        raise RuntimeError(
            f"ONNX gives {len(got['boxes'])} detections, PyTorch {len(ref['boxes'])}"
        )
    diffs = {
        k: float(np.abs(got[k] - ref[k].cpu().numpy()).max()) if len(ref[k]) else 0.0
        for k in ("boxes", "scores", "features")
    }
    # a query box through the re-ID graph vs extract_query
    qbox = np.array([[w * 0.1, h * 0.1, w * 0.3, h * 0.8]], np.float32)
    with torch.no_grad():
        q_ref = model.extract_query([dict(inputs[0], query_box=qbox[0].tolist())])[0]
    if "detector" in paths:
        part1 = _session(paths["detector"]).run(None, {"images": x})[2]
        q = _session(paths["reid"]).run(None, {"images": x, "part1": part1, "boxes": qbox})[0]
    else:
        q = _session(paths["query"]).run(None, {"images": x, "boxes": qbox})[0]
    diffs["query_feature"] = float(np.abs(q[0] - q_ref["query_feature"].cpu().numpy()).max())
    bad = {k: v for k, v in diffs.items() if not v <= (box_atol if k == "boxes" else atol)}
    if bad:
        raise RuntimeError(
            f"ONNX vs PyTorch differences above atol {atol:g} (boxes {box_atol:g} px): {bad}"
        )
    logger.info("ONNX person-search check: %s", diffs)
    return diffs
