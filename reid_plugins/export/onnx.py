"""ONNX export of re-ID feature extractors: ``crops (N, 3, H, W) float32 RGB 0-255 ->
features (N, D)``, with a dynamic batch axis, checked against PyTorch with onnxruntime.

Any ``nn.Module`` mapping a crop batch to a feature batch can be exported with
:func:`export_onnx`. :func:`build_export_wrapper` makes one from a model:

* :class:`ReIDBaselineExportWrapper` for :class:`~reid_plugins.modeling.meta_arch.ReIDBaseline`
  and its subclasses (M3L, GMN's instance features): pixel normalisation -> backbone -> head
  -> post-BN feature -> L2 normalisation, i.e. exactly ``ReIDBaseline.inference``;
* a factory registered with :func:`register_export_wrapper` for the model's class (or a base
  class) -- the hook for other methods;
* otherwise :class:`CropFeatureWrapper` around a model method ``reid_head_on_crops(crops) ->
  (N, D)`` (person-search models expose their re-ID head on person crops this way).

The legacy TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) is used by default
because it needs no extra package; ``dynamo=True`` uses the ``torch.export`` exporter and
requires ``onnxscript``. Parameters are exported as they are in eval mode (BN running
statistics); nothing is trained or modified.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from typing import Callable, Dict, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.checkpointer import atomic_write_bytes
from ..modeling.meta_arch.baseline import ReIDBaseline
from ..utils import comm

__all__ = [
    "EXPORT_WRAPPERS",
    "CropFeatureWrapper",
    "OnnxVerificationError",
    "ReIDBaselineExportWrapper",
    "build_export_wrapper",
    "export_onnx",
    "register_export_wrapper",
    "verify_onnx",
]

logger = logging.getLogger(__name__)

#: ``{model class: factory(model) -> nn.Module crops -> features}``; looked up along the MRO.
EXPORT_WRAPPERS: Dict[Type[nn.Module], Callable[[nn.Module], nn.Module]] = {}

#: Name of the crop-feature method a model may expose for export (e.g. TDN's re-ID head).
CROP_METHOD = "reid_head_on_crops"


class OnnxVerificationError(RuntimeError):
    """onnxruntime outputs differ from PyTorch's by more than the tolerance."""


def register_export_wrapper(model_cls: Type[nn.Module]):
    """Decorator registering ``factory(model) -> nn.Module`` (crops -> features) for
    ``model_cls`` and its subclasses (the most derived registered class wins)."""

    def deco(factory: Callable[[nn.Module], nn.Module]):
        EXPORT_WRAPPERS[model_cls] = factory
        return factory

    return deco


class ReIDBaselineExportWrapper(nn.Module):
    """``images (N, 3, H, W)`` float RGB 0-255 -> L2-normalised post-BN features ``(N, C)``,
    the eval path of :class:`ReIDBaseline` (``preprocess_image`` -> backbone -> head ->
    ``post_bn`` -> ``F.normalize``). Shares (does not copy) the model's modules.

    Args:
        model: a :class:`ReIDBaseline` (or subclass) instance.
    """

    def __init__(self, model: ReIDBaseline) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head
        self.in_feature = model.in_feature
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone(), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.pixel_mean) / self.pixel_std
        feats = self.backbone(x)[self.in_feature]
        return F.normalize(self.head(feats)["post_bn"], dim=1)


register_export_wrapper(ReIDBaseline)(ReIDBaselineExportWrapper)


class CropFeatureWrapper(nn.Module):
    """Export adapter around ``getattr(model, method)(crops)``.

    The method takes ``(N, 3, H, W)`` float RGB 0-255 crops and returns ``(N, D)`` features,
    or a dict holding them under ``output_key`` (default: ``"features"`` or ``"feature"``).

    Args:
        model: the model.
        method: name of the crop-feature method (default ``reid_head_on_crops``).
        output_key: dict key of the features when the method returns a dict.
        normalize: L2-normalise the features in the exported graph.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = CROP_METHOD,
        *,
        output_key: Optional[str] = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if not callable(getattr(model, method, None)):
            raise AttributeError(
                f"{type(model).__name__} has no method '{method}' (crops -> features) to export"
            )
        self.model = model
        self.method = method
        self.output_key = output_key
        self.normalize = bool(normalize)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        out = getattr(self.model, self.method)(crops)
        if isinstance(out, dict):
            keys = [self.output_key] if self.output_key else ["features", "feature"]
            found = [k for k in keys if k in out]
            if not found:
                raise KeyError(f"{self.method} returned keys {sorted(out)}; expected {keys}")
            out = out[found[0]]
        return F.normalize(out, dim=1) if self.normalize else out


def build_export_wrapper(model: nn.Module, method: Optional[str] = None) -> nn.Module:
    """The crops -> features module to export for ``model`` (see the module docstring).

    Args:
        model: a built model (DDP is unwrapped).
        method: force :class:`CropFeatureWrapper` around this method name.

    Raises:
        TypeError: no registered factory and no ``reid_head_on_crops`` method.
    """
    model = comm.unwrap_model(model)
    if method:
        return CropFeatureWrapper(model, method)
    for cls in type(model).__mro__:
        if cls in EXPORT_WRAPPERS:
            return EXPORT_WRAPPERS[cls](model)
    if callable(getattr(model, CROP_METHOD, None)):
        return CropFeatureWrapper(model, CROP_METHOD)
    raise TypeError(
        f"No ONNX export wrapper for {type(model).__name__}: register a factory with "
        f"@register_export_wrapper({type(model).__name__}), give the model a "
        f"'{CROP_METHOD}(crops (N,3,H,W) 0-255) -> (N, D)' method, or pass method=..."
    )


def _device(module: nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def export_onnx(
    wrapper: nn.Module,
    path: str,
    *,
    input_size: Sequence[int],
    batch_size: int = 2,
    opset: int = 17,
    dynamic_batch: bool = True,
    dynamo: bool = False,
    metadata: Optional[Dict[str, str]] = None,
    input_name: str = "images",
    output_name: str = "features",
) -> str:
    """Export ``wrapper`` (crops -> features, put in eval mode) to ``path``, atomically.

    Args:
        input_size: ``(H, W)`` of the crops (``INPUT.SIZE_TEST``).
        batch_size: batch of the example input used for tracing.
        opset: ONNX opset.
        dynamic_batch: dynamic axis 0 of the input and the output (named ``"batch"``).
        dynamo: use the ``torch.export``-based exporter (needs ``onnxscript``).
        metadata: string key/values stored in the model's ``metadata_props``.

    Returns:
        ``path``. The file passes ``onnx.checker.check_model``.
    """
    import onnx

    if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
        raise ValueError(f"input_size must be (height, width), got {tuple(input_size)}")
    wrapper.eval()
    h, w = int(input_size[0]), int(input_size[1])
    g = torch.Generator().manual_seed(0)
    example = (torch.rand(int(batch_size), 3, h, w, generator=g) * 255).to(_device(wrapper))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".onnx", dir=directory)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message="The feature will be removed.*")
            # IBN's InstanceNorm always uses input statistics: the exporter's notice is moot.
            warnings.filterwarnings("ignore", message=".*ONNX export mode is set to.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            if dynamo:
                try:
                    import onnxscript  # noqa: F401
                except ImportError as e:
                    raise ImportError("dynamo=True needs `pip install onnxscript`") from e
                shapes = {input_name: {0: torch.export.Dim("batch")}} if dynamic_batch else None
                prog = torch.onnx.export(
                    wrapper, (example,), None, dynamo=True, opset_version=opset,
                    input_names=[input_name], output_names=[output_name], dynamic_shapes=shapes,
                )  # fmt: skip
                prog.save(tmp)
            else:
                axes = {input_name: {0: "batch"}, output_name: {0: "batch"}}
                torch.onnx.export(
                    wrapper, (example,), tmp, dynamo=False, opset_version=opset,
                    input_names=[input_name], output_names=[output_name],
                    dynamic_axes=axes if dynamic_batch else None, do_constant_folding=True,
                )  # fmt: skip
        model = onnx.load(tmp)
        meta = {"input": f"float32 RGB 0-255 (N, 3, {h}, {w})", "output": "(N, D) features"}
        meta.update(metadata or {})
        for k, v in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
        save_checked_onnx(model, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("Exported %s to %s (opset %d)", type(wrapper).__name__, path, opset)
    return path


def save_checked_onnx(model, path: str) -> None:
    """``onnx.checker.check_model(model)``, then write it to ``path`` atomically (a crash
    leaves the previous file or the complete new one; the mode a plainly created file gets)."""
    import onnx

    onnx.checker.check_model(model)
    atomic_write_bytes(path, lambda f: f.write(model.SerializeToString()))


def verify_onnx(
    wrapper: nn.Module,
    path: str,
    *,
    inputs: Optional[torch.Tensor] = None,
    batch_size: int = 3,
    atol: float = 1e-4,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Tuple[float, np.ndarray]:
    """Run the ONNX file with onnxruntime and PyTorch on the same crops and compare.

    Args:
        inputs: ``(N, 3, H, W)`` crops (0-255); default ``batch_size`` random crops of the
            ONNX input's size (choose a batch different from the export's to check the
            dynamic axis).
        atol: maximum allowed absolute difference.

    Returns:
        ``(max_abs_diff, onnx_outputs)``.

    Raises:
        OnnxVerificationError: shapes differ or the difference exceeds ``atol``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=list(providers))
    inp = session.get_inputs()[0]
    if inputs is None:
        h, w = inp.shape[2], inp.shape[3]
        if not (isinstance(h, int) and isinstance(w, int)):
            raise ValueError(f"'{path}' has a dynamic crop size {inp.shape}; pass inputs=")
        g = torch.Generator().manual_seed(1)
        inputs = torch.rand(int(batch_size), 3, h, w, generator=g) * 255
    x = inputs.detach().float().cpu()
    onnx_out = session.run(None, {inp.name: x.numpy()})[0]
    wrapper.eval()
    with torch.no_grad():
        ref = wrapper(x.to(_device(wrapper))).float().cpu().numpy()
    if onnx_out.shape != ref.shape:
        raise OnnxVerificationError(
            f"'{path}': onnxruntime output shape {onnx_out.shape} != PyTorch {ref.shape}"
        )
    diff = float(np.abs(onnx_out - ref).max()) if ref.size else 0.0
    if not diff <= atol:
        raise OnnxVerificationError(
            f"'{path}': max |onnxruntime - PyTorch| = {diff:.3g} > atol {atol:g} "
            f"on a batch of {x.shape[0]}"
        )
    logger.info("ONNX check of %s: max abs diff %.3g on batch %d", path, diff, x.shape[0])
    return diff, onnx_out
