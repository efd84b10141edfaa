"""Scene mapper for person search: a scene record -> the detector's input dict.

Steps (torchvision ``transforms.v2`` on a ``tv_tensors.Image`` and its
``tv_tensors.BoundingBoxes``, so boxes follow every geometric change):

1. :func:`~reid_plugins.data.detection_utils.read_image` (RGB uint8; errors name the file);
2. resize keeping the aspect ratio: scale ``s = min(min_size / short side, max_size / long
   side)``, i.e. the shorter side becomes ``min_size`` unless the longer side would then
   exceed ``max_size`` (:func:`scene_resize_shape`);
3. (training) horizontal flip with probability ``flip_prob``.

Output: a shallow copy of the record plus ``"image"`` (float32 ``(3, H', W')``, 0-255 RGB),
``"gt_boxes"`` (float32 ``(N, 4)`` x1,y1,x2,y2 in the resized (and flipped) image) and
``"gt_pids"`` (int64 ``(N,)``). ``"height"``/``"width"`` (original size), ``"boxes"``/``"pids"``
(original coordinates, used by the evaluator) and ``"query_box"`` (original coordinates; the
model rescales it) are kept unchanged.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from .detection_utils import ImageReadError, read_image

__all__ = ["SceneDatasetMapper", "scene_resize_shape"]

logger = logging.getLogger(__name__)


def scene_resize_shape(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """Resized ``(height, width)``: shorter side ``min_size`` unless the longer side would
    exceed ``max_size`` (then the longer side is ``max_size``); aspect ratio kept, rounded.

    Example: ``(480, 640)`` with ``(600, 1000)`` -> ``(600, 800)``; ``(300, 1000)`` ->
    ``(300, 1000)`` (``1000 / 1000 < 600 / 300``).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"scene_resize_shape: invalid image size {height}x{width}")
    if min_size <= 0 or max_size <= 0:
        raise ValueError(
            f"INPUT.MIN_SIZE_* ({min_size}) and INPUT.MAX_SIZE_* ({max_size}) must be positive"
        )
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


class SceneDatasetMapper:
    """Read, resize and (optionally) flip a scene record with its boxes.

    Constructor contract (keyword-only):
        min_size, max_size: resize rule of :func:`scene_resize_shape`.
        flip_prob: probability of a horizontal flip (0 disables it; evaluation uses 0).
        skip_corrupt: False (default) -> an unreadable image raises
            :class:`~reid_plugins.data.ImageReadError` naming the file; True -> warning naming
            the file and ``None`` (the loader's collate function drops it).
        image_format: format passed to ``read_image`` ("RGB").

    Call: ``mapper(record, seed=None)`` returns a new dict (the record is never modified).
    ``seed`` makes the random flip a function of the seed alone (the scene loaders pass a
    per-sample seed derived from ``(cfg.SEED, iteration, position)``); ``None`` uses numpy's
    global generator. Records need ``"file_name"``; ``"boxes"`` (N, 4) and ``"pids"`` (N,) are
    optional (zero boxes when absent).
    """

    def __init__(
        self,
        *,
        min_size: int,
        max_size: int,
        flip_prob: float = 0.0,
        skip_corrupt: bool = False,
        image_format: str = "RGB",
    ) -> None:
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"INPUT.FLIP.PROB must be in [0, 1], got {flip_prob}")
        scene_resize_shape(1, 1, min_size, max_size)  # validates the sizes
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.flip_prob = float(flip_prob)
        self.skip_corrupt = bool(skip_corrupt)
        self.image_format = image_format
        self.num_skipped = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> "SceneDatasetMapper":
        """``INPUT.{MIN,MAX}_SIZE_{TRAIN,TEST}``, ``INPUT.FLIP.{ENABLED,PROB}`` (training only)
        and ``DATALOADER.SKIP_CORRUPT``."""
        i = cfg.INPUT
        flip = float(i.FLIP.PROB) if (is_train and i.FLIP.ENABLED) else 0.0
        return cls(
            min_size=i.MIN_SIZE_TRAIN if is_train else i.MIN_SIZE_TEST,
            max_size=i.MAX_SIZE_TRAIN if is_train else i.MAX_SIZE_TEST,
            flip_prob=flip,
            skip_corrupt=cfg.DATALOADER.SKIP_CORRUPT,
        )

    def _read(self, file_name: str) -> Optional[np.ndarray]:
        try:
            return read_image(file_name, format=self.image_format)
        except ImageReadError as e:
            if not self.skip_corrupt:
                raise
            self.num_skipped += 1
            logger.warning(
                "Skipping unreadable scene '%s' (%s); DATALOADER.SKIP_CORRUPT is set "
                "(%d skipped by this process so far)",
                file_name,
                e.reason,
                self.num_skipped,
            )
            return None

    def _flip(self, seed: Optional[int]) -> bool:
        if self.flip_prob <= 0.0:
            return False
        u = np.random.default_rng(seed).random() if seed is not None else np.random.random()
        return bool(u < self.flip_prob)

    def __call__(self, record: Dict[str, Any], seed: Optional[int] = None) -> Optional[Dict]:
        if "file_name" not in record:
            raise KeyError(f"Scene record has no 'file_name' field: {sorted(record)}")
        array = self._read(record["file_name"])
        if array is None:
            return None
        h, w = array.shape[:2]
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))
        raw = np.asarray(record.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        pids = np.asarray(record.get("pids", np.full(len(raw), -1)), dtype=np.int64).reshape(-1)
        if len(pids) != len(raw):
            raise ValueError(
                f"Scene '{record['file_name']}': {len(raw)} boxes but {len(pids)} pids"
            )
        boxes = tv_tensors.BoundingBoxes(
            torch.from_numpy(raw), format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(h, w)
        )
        boxes = TF.clamp_bounding_boxes(boxes)
        new_h, new_w = scene_resize_shape(h, w, self.min_size, self.max_size)
        if (new_h, new_w) != (h, w):
            image = TF.resize(image, [new_h, new_w], antialias=True)
            boxes = TF.resize(boxes, [new_h, new_w])
        if self._flip(seed):
            image = TF.horizontal_flip(image)
            boxes = TF.horizontal_flip(boxes)
        out = dict(record)
        out["image"] = image.as_subclass(torch.Tensor).float()
        out["gt_boxes"] = boxes.as_subclass(torch.Tensor).float()
        out["gt_pids"] = torch.from_numpy(pids)
        return out

    def __repr__(self) -> str:
        return (
            f"SceneDatasetMapper(min_size={self.min_size}, max_size={self.max_size}, "
            f"flip_prob={self.flip_prob}, skip_corrupt={self.skip_corrupt})"
        )
