"""Dataset mapper: a ReID record -> the model's input dict (record + "image" tensor)."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from .detection_utils import ImageReadError, read_image
from .transforms import build_reid_transforms

__all__ = ["ReIDDatasetMapper"]

logger = logging.getLogger(__name__)


class ReIDDatasetMapper:
    """Read a ReID record's image and transform it.

    Constructor contract (keyword-only):
        transforms: callable mapping an ``(H, W, 3)`` uint8 RGB array to a ``(3, H, W)``
            float32 tensor (e.g. :class:`~reid_plugins.data.transforms.ReIDTransforms`).
        skip_corrupt: when False (default) an unreadable image raises :class:`ImageReadError`
            naming the file; when True a warning naming the file is logged and the mapper
            returns ``None`` (the loaders' collate function then drops the sample and counts
            it).
        image_format: format passed to :func:`read_image` ("RGB").

    Call: ``mapper(record)`` returns a **new** dict: a shallow copy of ``record`` plus
    ``"image"`` (float32 ``(3, H, W)``, 0-255 RGB); the record itself is never modified.
    ``num_skipped`` counts the records skipped by this mapper instance (per process).
    """

    def __init__(
        self,
        *,
        transforms: Callable[[np.ndarray], torch.Tensor],
        skip_corrupt: bool = False,
        image_format: str = "RGB",
    ):
        self.transforms = transforms
        self.skip_corrupt = skip_corrupt
        self.image_format = image_format
        self.num_skipped = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> "ReIDDatasetMapper":
        """Transforms from ``INPUT.*`` and ``skip_corrupt`` from ``DATALOADER.SKIP_CORRUPT``."""
        return cls(
            transforms=build_reid_transforms(cfg, is_train),
            skip_corrupt=cfg.DATALOADER.SKIP_CORRUPT,
        )

    def __call__(self, record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if "file_name" not in record:
            raise KeyError(f"ReID record has no 'file_name' field: {record}")
        file_name = record["file_name"]
        try:
            image = read_image(file_name, format=self.image_format)
        except ImageReadError as e:
            if not self.skip_corrupt:
                raise
            self.num_skipped += 1
            logger.warning(
                "Skipping unreadable image '%s' (%s); DATALOADER.SKIP_CORRUPT is set "
                "(%d skipped by this process so far)",
                file_name,
                e.reason,
                self.num_skipped,
            )
            return None
        out = dict(record)
        out["image"] = self.transforms(image)
        return out

    def __repr__(self) -> str:
        return (
            f"ReIDDatasetMapper(transforms={self.transforms!r}, skip_corrupt={self.skip_corrupt})"
        )
