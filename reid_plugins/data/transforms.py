"""Image transforms for ReID crops (built on ``torchvision.transforms.v2``).

Training: resize to ``INPUT.SIZE_TRAIN`` -> random horizontal flip -> pad + random crop back
to the same size -> float32 -> random erasing (optional). Evaluation: resize to
``INPUT.SIZE_TEST`` -> float32. Output is a ``float32`` tensor ``(3, H, W)`` with values in
``[0, 255]`` (RGB); mean/std normalisation is done by the model (``MODEL.PIXEL_MEAN/STD``).

Randomness comes from torch's global generator (torchvision's convention); the data loaders
seed it per worker from ``cfg.SEED``.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["ReIDTransforms", "build_reid_transforms", "image_to_tensor"]

_PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


def image_to_tensor(image: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """Convert an ``(H, W, C)`` uint8 array to a ``(C, H, W)`` uint8 tensor (no copy of values).

    A tensor input must already be ``(C, H, W)`` and is returned unchanged.

    Raises:
        ValueError: the array is not 3-dimensional.
    """
    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise ValueError(f"Expected a (C, H, W) image tensor, got shape {tuple(image.shape)}")
        return image
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"Expected an (H, W, C) image array, got {type(image).__name__} {shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


class ReIDTransforms:
    """Callable image transform for ReID crops.

    Constructor contract (keyword-only):
        size: output ``(height, width)``.
        is_train: training pipeline (flip / pad-crop / erasing) when True, resize only when
            False (the augmentation arguments are then ignored).
        flip_prob: probability of a horizontal flip (0 disables).
        padding: pixels padded on every side before the random crop back to ``size``
            (0 disables pad-crop).
        padding_mode: "constant" (zeros), "edge", "reflect" or "symmetric".
        erasing_prob: probability of random erasing (0 disables).
        erasing_scale: range of the erased area as a fraction of the image.
        erasing_ratio: range of the erased rectangle's aspect ratio.
        erasing_value: per-channel fill value (0-255 scale) of erased pixels, e.g. the pixel
            mean so that erased pixels become 0 after the model's normalisation.

    Call: ``transforms(image)`` with an ``(H, W, 3)`` uint8 array (as returned by
    :func:`read_image`) or a ``(3, H, W)`` uint8 tensor; returns a ``float32`` tensor
    ``(3, height, width)`` with values in ``[0, 255]``. The input is not modified.
    """

    def __init__(
        self,
        *,
        size: Sequence[int],
        is_train: bool,
        flip_prob: float = 0.0,
        padding: int = 0,
        padding_mode: str = "constant",
        erasing_prob: float = 0.0,
        erasing_scale: Sequence[float] = (0.02, 0.4),
        erasing_ratio: Sequence[float] = (0.3, 3.3),
        erasing_value: Sequence[float] = (0.0, 0.0, 0.0),
    ):
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"size must be (height, width) with positive values, got {size}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if not 0.0 <= erasing_prob <= 1.0:
            raise ValueError(f"erasing_prob must be in [0, 1], got {erasing_prob}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.size: Tuple[int, int] = (int(size[0]), int(size[1]))
        self.is_train = is_train
        ops = [v2.Resize(self.size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)]
        if is_train:
            if flip_prob > 0:
                ops.append(v2.RandomHorizontalFlip(p=flip_prob))
            if padding > 0:
                ops.append(v2.Pad(padding, fill=0, padding_mode=padding_mode))
                ops.append(v2.RandomCrop(self.size))
        ops.append(v2.ToDtype(torch.float32, scale=False))
        if is_train and erasing_prob > 0:
            ops.append(
                v2.RandomErasing(
                    p=erasing_prob,
                    scale=tuple(erasing_scale),
                    ratio=tuple(erasing_ratio),
                    value=[float(v) for v in erasing_value],
                )
            )
        self.transform = v2.Compose(ops)

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> "ReIDTransforms":
        """Build from ``INPUT.*`` (and ``MODEL.PIXEL_MEAN`` as the erasing fill value)."""
        if not is_train:
            return cls(size=cfg.INPUT.SIZE_TEST, is_train=False)
        return cls(
            size=cfg.INPUT.SIZE_TRAIN,
            is_train=True,
            flip_prob=cfg.INPUT.FLIP.PROB if cfg.INPUT.FLIP.ENABLED else 0.0,
            padding=cfg.INPUT.PADDING.SIZE if cfg.INPUT.PADDING.ENABLED else 0,
            padding_mode=cfg.INPUT.PADDING.MODE,
            erasing_prob=cfg.INPUT.REA.PROB if cfg.INPUT.REA.ENABLED else 0.0,
            erasing_scale=cfg.INPUT.REA.SCALE,
            erasing_ratio=cfg.INPUT.REA.RATIO,
            erasing_value=cfg.MODEL.PIXEL_MEAN,
        )

    def __call__(self, image: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        tensor = tv_tensors.Image(image_to_tensor(image))
        out = self.transform(tensor)
        return out.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"ReIDTransforms(is_train={self.is_train}, {self.transform})"


def build_reid_transforms(cfg, is_train: bool) -> ReIDTransforms:
    """Transforms for ReID crops from ``cfg.INPUT`` (see :class:`ReIDTransforms`).

    Args:
        cfg: config with ``INPUT.SIZE_TRAIN/SIZE_TEST``, ``INPUT.FLIP.*``, ``INPUT.PADDING.*``,
            ``INPUT.REA.*`` and ``MODEL.PIXEL_MEAN``.
        is_train: training augmentation when True; resize only when False.

    Returns:
        A callable mapping an ``(H, W, 3)`` uint8 image to a ``(3, H, W)`` float32 tensor in
        ``[0, 255]``.

    Raises:
        ValueError: an invalid ``INPUT.*`` value (the message names the config subtree).
    """
    try:
        return ReIDTransforms.from_config(cfg, is_train)
    except ValueError as e:
        keys = "INPUT.SIZE_TRAIN, INPUT.FLIP.*, INPUT.PADDING.*, INPUT.REA.*"
        raise ValueError(f"Invalid {keys if is_train else 'INPUT.SIZE_TEST'}: {e}") from e
