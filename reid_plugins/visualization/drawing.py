"""Drawing primitives of the visualiser: colours, image I/O, resizing onto tiles, captions,
borders, grids and boxes, and detections (boxes, scores, pids) drawn on a scene.

All drawing functions take and return RGB ``uint8`` arrays ``(H, W, 3)``. Public names are
re-exported by :mod:`reid_plugins.visualization.visualizer`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "CORRECT",
    "NEUTRAL",
    "QUERY",
    "UNKNOWN",
    "WRONG",
    "MIN_FONT_SCALE",
    "camera_label",
    "draw_boxes",
    "draw_detections",
    "fit_caption",
    "fit_image",
    "load_detections",
    "load_rgb",
    "make_grid",
    "save_png",
    "text_width",
]

CORRECT = (0, 170, 0)
WRONG = (220, 30, 30)
QUERY = (30, 110, 255)
NEUTRAL = (140, 140, 140)
UNKNOWN = (255, 165, 0)  # result whose correctness is unknown (demo rankings)
_WHITE = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX

ImageLike = Union[str, np.ndarray]


# ----------------------------------------------------------------------------- basic drawing
def load_rgb(image: ImageLike, image_root: Optional[str] = None) -> np.ndarray:
    """An RGB uint8 array: ``image`` itself, or the file it names (relative paths are
    joined to ``image_root`` when given). Errors name the file (``ImageReadError``)."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}")
        return image
    from ..data.detection_utils import read_image

    path = image
    if image_root and not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(image_root, path)
    return read_image(path, format="RGB")


def save_png(path: str, image: np.ndarray) -> str:
    """Write an RGB array as PNG (parent folders created); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image '{path}'")
    return path


def fit_image(
    image: np.ndarray, size: Tuple[int, int], fill: int = 255
) -> Tuple[np.ndarray, float, Tuple[int, int]]:
    """Resize keeping the aspect ratio and centre on a ``size = (h, w)`` canvas.

    Returns:
        ``(canvas, scale, (offset_x, offset_y))``: a point ``(x, y)`` of ``image`` is at
        ``(x * scale + offset_x, y * scale + offset_y)`` on the canvas.
    """
    h, w = int(size[0]), int(size[1])
    ih, iw = image.shape[:2]
    scale = min(h / ih, w / iw)
    nh, nw = max(1, int(round(ih * scale))), max(1, int(round(iw * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    canvas = np.full((h, w, 3), fill, dtype=np.uint8)
    ox, oy = (w - nw) // 2, (h - nh) // 2
    canvas[oy : oy + nh, ox : ox + nw] = resized
    return canvas, scale, (ox, oy)


def _font_scale(width: int) -> float:
    return float(np.clip(width / 230.0, 0.35, 0.6))


#: Smallest font scale a caption is shrunk to before its lines are wrapped.
MIN_FONT_SCALE = 0.3
_SEPARATORS = "_-./ |"


def text_width(text: str, scale: float) -> int:
    """Width in pixels of ``text`` drawn with the caption font at ``scale``."""
    return int(cv2.getTextSize(str(text), _FONT, scale, 1)[0][0])


def _wrap(text: str, width: int, scale: float) -> List[str]:
    """Pieces of ``text`` no wider than ``width`` (concatenated they give ``text``), broken
    after a separator (``_ - . / space |``) when one lies in the second half of a piece,
    else anywhere: file names are never cut off, only wrapped."""
    out: List[str] = []
    rest = text
    while rest:
        n = len(rest)
        while n > 1 and text_width(rest[:n], scale) > width:
            n -= 1
        if n < len(rest):
            cut = max(rest.rfind(c, 0, n) for c in _SEPARATORS)
            if cut + 1 >= max(1, n // 2):
                n = cut + 1
        out.append(rest[:n])
        rest = rest[n:]
    return out


def fit_caption(lines: Sequence[str], width: int, scale: float) -> Tuple[List[str], float]:
    """``(lines, scale)`` such that every line fits ``width`` pixels: the font is first shrunk
    (down to :data:`MIN_FONT_SCALE`), then the lines still too wide are wrapped."""
    lines = [str(t) for t in lines]
    while scale > MIN_FONT_SCALE and any(text_width(t, scale) > width for t in lines):
        scale = max(MIN_FONT_SCALE, round(scale - 0.05, 4))
    return [piece for t in lines for piece in (_wrap(t, width, scale) if t else [t])], scale


def _caption(tile: np.ndarray, lines: Sequence[str], color=(0, 0, 0)) -> np.ndarray:
    """Append a white band below ``tile`` with the text lines, shrunk and wrapped to the
    tile's width (never cut)."""
    lines, scale = fit_caption(lines, max(8, tile.shape[1] - 4), _font_scale(tile.shape[1]))
    line_h = int(round(28 * scale)) + 2
    band = np.full((line_h * len(lines) + 2, tile.shape[1], 3), 255, dtype=np.uint8)
    for i, text in enumerate(lines):
        y = line_h * (i + 1) - 3
        cv2.putText(band, text, (2, y), _FONT, scale, color, 1, cv2.LINE_AA)
    return np.concatenate([tile, band], axis=0)


def camera_label(camid: int) -> str:
    """``c<camera>`` as the datasets name cameras (1-based: camid 0 -> ``c1``); records keep
    0-based camids (Market ``c1``, MSMT17 ``01``, PRW ``c1``, CUHK03 view 1 -> 0); a negative
    camid (unknown camera, e.g. CUHK-SYSU) -> ``c?``."""
    camid = int(camid)
    return f"c{camid + 1}" if camid >= 0 else "c?"


def _border(tile: np.ndarray, color, thickness: int) -> np.ndarray:
    return cv2.copyMakeBorder(
        tile, thickness, thickness, thickness, thickness, cv2.BORDER_CONSTANT, value=color
    )


def make_grid(tiles: Sequence[np.ndarray], ncols: int, gap: int = 6) -> np.ndarray:
    """Tiles (possibly of different sizes) on a white grid, ``ncols`` per row, top-left
    aligned in cells as large as the largest tile."""
    if not tiles:
        raise ValueError("make_grid: no tiles")
    ncols = max(1, min(int(ncols), len(tiles)))
    ch = max(t.shape[0] for t in tiles)
    cw = max(t.shape[1] for t in tiles)
    nrows = (len(tiles) + ncols - 1) // ncols
    out = np.full((nrows * (ch + gap) + gap, ncols * (cw + gap) + gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        y, x = gap + r * (ch + gap), gap + c * (cw + gap)
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out


def _title(image: np.ndarray, text: str) -> np.ndarray:
    return np.concatenate([_caption(np.zeros((0, image.shape[1], 3), np.uint8), [text]), image])


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    colors: Sequence[Tuple[int, int, int]],
    labels: Optional[Sequence[str]] = None,
    thickness: int = 2,
) -> np.ndarray:
    """A copy of ``image`` with ``boxes`` (N, 4) x1y1x2y2 drawn, each in its colour, with an
    optional label above (inside when at the top edge)."""
    out = np.ascontiguousarray(image).copy()
    h = out.shape[0]
    scale = _font_scale(min(out.shape[1], 520)) * 0.9
    for i, b in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        col = tuple(int(c) for c in colors[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), col, thickness, cv2.LINE_AA)
        if labels is not None and labels[i]:
            # shrunk / wrapped to the image width, never cut
            lines, s = fit_caption([labels[i]], max(8, out.shape[1] - 4), scale)
            th = cv2.getTextSize("Ag", _FONT, s, 1)[0][1]
            tw = max(text_width(t, s) for t in lines)
            block = len(lines) * (th + 4)
            # above the box, else inside it from its top, moved up to end inside the image
            top = y1 - block - 1 if y1 - block - 1 >= 0 else max(0, min(y1 + 1, h - block))
            tx = max(0, min(x1, out.shape[1] - tw - 3))  # keep the label inside the image
            cv2.rectangle(out, (tx, top), (tx + tw + 2, top + block), col, -1)
            for k, text in enumerate(lines):
                ty = top + (k + 1) * (th + 4) - 3
                cv2.putText(out, text, (tx + 1, ty), _FONT, s, _WHITE, 1, cv2.LINE_AA)
    return out


def _status_colour(correct: Optional[bool]) -> Tuple[int, int, int]:
    return UNKNOWN if correct is None else (CORRECT if correct else WRONG)


def _read_json(path: str, what: str) -> Dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} JSON '{path}' does not exist") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} JSON '{path}' is not valid JSON: {e}") from e


# ----------------------------------------------------------------------------- detections
def _pid_colour(pid: int) -> Tuple[int, int, int]:
    if pid < 0:
        return NEUTRAL
    hue = int((pid * 0.618033988749895 % 1.0) * 179)
    hsv = np.array([[[hue, 200, 220]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(
    image: ImageLike,
    boxes: Any,
    scores: Optional[Any] = None,
    pids: Optional[Any] = None,
    *,
    score_thresh: float = 0.0,
    highlight: Optional[int] = None,
) -> np.ndarray:
    """Boxes with ``score`` / ``pid`` labels on the scene (boxes with score < ``score_thresh``
    are skipped). Colour by pid (unlabelled ``-1`` grey) when pids are given, else by score
    (green); ``highlight`` = index of a box drawn thick in blue (e.g. the best match)."""
    img = load_rgb(image)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    p = None if pids is None else np.asarray(pids, dtype=np.int64).reshape(-1)
    for name, arr in (("scores", s), ("pids", p)):
        if arr is not None and len(arr) != len(b):
            raise ValueError(f"draw_detections: {len(b)} boxes but {len(arr)} {name}")
    keep = np.ones(len(b), bool) if s is None else s >= score_thresh
    idx = np.flatnonzero(keep)
    colours, labels = [], []
    for i in idx:
        parts = [] if s is None else [f"{s[i]:.2f}"]
        if p is not None:
            parts.append(f"pid {p[i]}" if p[i] >= 0 else "unl.")
        colours.append(_pid_colour(int(p[i])) if p is not None else CORRECT)
        labels.append(" ".join(parts))
    out = draw_boxes(img, b[idx], colours, labels, thickness=2)
    if highlight is not None and 0 <= highlight < len(b):
        out = draw_boxes(out, b[highlight][None], [QUERY], thickness=4)
    return out


def load_detections(json_path: str) -> List[Dict[str, Any]]:
    """Detections JSON: a list (or ``{"images": [...]}``) of ``{"file_name" or "image_id",
    "boxes": [[x1,y1,x2,y2], ...], "scores": [...] (optional), "pids": [...] (optional)}``
    (the format ``tools/demo.py search`` writes)."""
    data = _read_json(json_path, "Detections")
    entries = data["images"] if isinstance(data, dict) and "images" in data else data
    if not isinstance(entries, list):
        raise ValueError(f"'{json_path}': expected a list of images or {{'images': [...]}}")
    for i, e in enumerate(entries):
        if "boxes" not in e or not ("file_name" in e or "image_id" in e):
            raise KeyError(f"'{json_path}': entry {i} needs 'boxes' and 'file_name'/'image_id'")
    return entries
