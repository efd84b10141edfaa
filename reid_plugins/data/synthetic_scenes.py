"""Deterministic synthetic person-search scenes in the CUHK-SYSU or PRW layout.

:func:`generate_synthetic_scenes` draws street-like scenes (textured walls and floors,
clutter) seen by several cameras that differ in colour cast, illumination (gain, gamma),
resolution, blur and noise, with several persons per image at perspective-dependent scales,
overlapping each other and cut at the image border. Labelled identities have a fixed
appearance (skin, hair, clothing colours and pattern, trousers / shorts / skirt, build,
backpack / handbag / hat) drawn from front, back or side views; every labelled identity
appears in ``appearances`` images of its split, spread over different cameras, and
train / test identities are disjoint. Unlabelled persons have one-off appearances.

Outputs (the layouts of the dataset specification, annotations written with
:func:`scipy.io.savemat`, read back by the real parsers):

* ``fmt="cuhk_sysu"`` -> ``<root>/synthetic_cuhk_sysu/``: ``Image/SSM/s<k>.jpg``,
  ``annotation/Images.mat``, ``annotation/pool.mat`` (the test images),
  ``annotation/test/train_test/Train.mat`` and ``TestG<N>.mat`` for every N in
  :data:`CUHK_GALLERY_SIZES` with ``N <= num_test_images - 1`` (a query's gallery never
  holds its own image; e.g. 100 test images -> TestG10, TestG20, TestG50). One query per
  test identity (its first appearance); the gallery lists the other images of that identity
  first, then distractor pool images. Cameras only change the pixels (the layout has none).
* ``fmt="prw"`` -> ``<root>/synthetic_prw/``: ``frames/c<cam>s<seq>_<frame>.jpg``,
  ``annotations/<frame>.jpg.mat`` (key ``box_new``; every 11th frame uses ``anno_file`` and
  every 13th ``anno_previous`` so the key fallback runs end to end), ``frame_train.mat``,
  ``frame_test.mat``, ``ID_train.mat``, ``ID_test.mat`` and ``query_info.txt`` (one query
  per test identity and camera it appears in). Raw ids are a random subset of 1..T+S;
  unlabelled persons have pid -2; persons cut at the left / top border keep their negative
  ``x`` / ``y`` (clipped by the parser), boxes are clipped at the right / bottom border.

Same arguments -> byte-identical files (per-image random streams, fixed .mat headers). A
``manifest.json`` (parameters, sha1 and size of every file) makes repeated calls free; the
data is built in a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

__all__ = [
    "draw_person",
    "random_appearance",
    "CUHK_GALLERY_SIZES",
    "FORMATS",
    "generate_synthetic_scenes",
    "ensure_synthetic_scenes",
    "synthetic_scenes_dir",
]

FORMATS = ("cuhk_sysu", "prw")
#: Candidate TestG<N> gallery sizes of the synthetic CUHK-SYSU layout.
CUHK_GALLERY_SIZES = (10, 20, 50, 100, 500, 1000, 2000, 4000)
_VERSION = 1
_MANIFEST = "manifest.json"


def synthetic_scenes_dir(root: str, fmt: str) -> str:
    """``<root>/synthetic_<fmt>``."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got '{fmt}'")
    return os.path.join(root, f"synthetic_{fmt}")


# --------------------------------------------------------------------------------------- #
# Persons
# --------------------------------------------------------------------------------------- #
_CLOTHES = np.array(
    [
        [200, 30, 30],
        [30, 60, 170],
        [240, 240, 235],
        [25, 25, 30],
        [40, 140, 60],
        [230, 200, 40],
        [120, 70, 30],
        [130, 130, 140],
        [230, 110, 20],
        [120, 40, 150],
        [240, 150, 180],
        [20, 150, 160],
        [90, 110, 50],
        [170, 150, 110],
        [70, 20, 30],
        [100, 170, 230],
    ],
    dtype=np.float64,
)
_SKIN = np.array([[255, 220, 190], [235, 190, 150], [200, 150, 110], [150, 100, 70], [95, 65, 45]])
_HAIR = np.array([[20, 15, 10], [70, 45, 25], [140, 100, 50], [200, 170, 110], [120, 120, 120]])


def _colour(rng: np.random.Generator, palette: np.ndarray, jitter: float = 18.0) -> tuple:
    c = palette[rng.integers(len(palette))] + rng.uniform(-jitter, jitter, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def random_appearance(rng: np.random.Generator) -> Dict[str, Any]:
    """A random identity appearance (colours RGB 0-255) for :func:`draw_person`."""
    return {
        "skin": _colour(rng, _SKIN, 8),
        "hair": _colour(rng, _HAIR, 10),
        "long_hair": bool(rng.random() < 0.35),
        "top": _colour(rng, _CLOTHES),
        "top2": _colour(rng, _CLOTHES),
        "pattern": int(rng.integers(5)),  # solid, h-stripes, v-stripes, checker, two-tone
        "long_sleeves": bool(rng.random() < 0.6),
        "bottom": _colour(rng, _CLOTHES),
        "bottom_kind": int(rng.choice(3, p=[0.6, 0.2, 0.2])),  # trousers, shorts, skirt
        "shoes": _colour(rng, _CLOTHES[[3, 6, 2, 7]], 10),
        "build": float(rng.uniform(0.8, 1.05)),
        "accessory": int(rng.choice(4, p=[0.4, 0.25, 0.2, 0.15])),  # none, backpack, bag, hat
        "acc_colour": _colour(rng, _CLOTHES),
    }


def _trap(d: tuple, y0: float, a0: float, b0: float, y1: float, a1: float, b1: float, colour):
    """Fill the trapezoid with x-range (a0, b0) at row y0 and (a1, b1) at row y1 into
    ``d = (img, mask)``."""
    p = np.round(np.array([[a0, y0], [b0, y0], [b1, y1], [a1, y1]])).astype(np.int32)[None]
    cv2.fillPoly(d[0], p, colour)
    cv2.fillPoly(d[1], p, 255)


def _ellipse(d: tuple, c, axes, colour, start: int = 0, end: int = 360) -> None:
    c = (int(round(c[0])), int(round(c[1])))
    axes = (max(1, int(round(axes[0]))), max(1, int(round(axes[1]))))
    cv2.ellipse(d[0], c, axes, 0, start, end, colour, -1)
    cv2.ellipse(d[1], c, axes, 0, start, end, 255, -1)


def draw_person(app: Dict[str, Any], h: int, w: int, rng: np.random.Generator):
    """Draw one person filling an ``h x w`` box.

    Args:
        app: appearance from :func:`random_appearance`.
        h, w: sprite size in pixels.
        rng: per-instance randomness (view: front / back / side, stride, arm swing, shading).

    Returns:
        ``(rgb uint8 (h, w, 3), mask bool (h, w))``.
    """
    d = (np.zeros((h, w, 3), dtype=np.uint8), np.zeros((h, w), dtype=np.uint8))
    view = int(rng.integers(3))  # 0 front, 1 back, 2 side
    cx = w / 2 + rng.uniform(-0.03, 0.03) * w
    b = app["build"] * (0.72 if view == 2 else 1.0)
    tw, hip = 0.30 * w * b, 0.24 * w * b
    y_sh, y_waist, y_knee, y_foot = 0.16 * h, 0.52 * h, 0.74 * h, 0.95 * h
    spread = rng.uniform(0.0, 0.09) * w
    # legs, shoes, shorts / skirt
    leg = app["bottom"] if app["bottom_kind"] == 0 else app["skin"]
    for s in (-1, 1):
        inner, outer = cx + s * 0.02 * w, cx + s * hip
        fi, fo = inner + s * spread, outer + s * spread
        _trap(d, y_waist, inner, outer, y_foot, fi, fo, leg)
        _trap(d, y_foot, fi, fo + s * 0.04 * w, h - 1, fi, fo + s * 0.04 * w, app["shoes"])
        if app["bottom_kind"] == 1:
            k = s * spread * 0.45
            _trap(d, y_waist, inner, outer, y_knee - 0.06 * h, inner + k, outer + k, app["bottom"])
    if app["bottom_kind"] == 2:
        _trap(
            d, y_waist, cx - hip, cx + hip, y_knee, cx - 1.35 * hip, cx + 1.35 * hip, app["bottom"]
        )
    # arms (sleeves), hands
    arm = app["top"] if app["long_sleeves"] else app["skin"]
    for s in (-1, 1):
        x0, sway = cx + s * tw, rng.uniform(-0.04, 0.06) * w
        top = (y_sh + 0.03 * h, x0 - s * 0.02 * w, x0 + s * 0.10 * w)
        _trap(d, *top, 0.50 * h, x0 + s * sway * 0.5, x0 + s * (0.10 * w + sway), arm)
        if not app["long_sleeves"]:
            _trap(d, *top, 0.29 * h, x0, x0 + s * 0.11 * w, app["top"])
        hand = (x0 + s * (0.05 * w + sway * 0.7), 0.51 * h)
        _ellipse(d, hand, (0.05 * w, 0.025 * h), app["skin"])
    # torso with its pattern
    torso = (np.zeros((h, w, 3), dtype=np.uint8), np.zeros((h, w), dtype=np.uint8))
    _trap(torso, y_sh, cx - tw, cx + tw, y_waist + 0.02 * h, cx - 1.05 * hip, cx + 1.05 * hip, 1)
    sel = torso[1] > 0
    d[0][sel], d[1][sel] = app["top"], 255
    pat, period = app["pattern"], max(2, int(round(0.035 * h)))
    if pat:
        yy, xx = np.mgrid[:h, :w]
        stripes = {
            1: (yy // period) % 2 == 1,
            2: (xx // period) % 2 == 1,
            3: ((yy // period) + (xx // period)) % 2 == 1,
            4: yy > (y_sh + y_waist) / 2,
        }[pat]
        d[0][sel & stripes] = app["top2"]
    # accessories
    acc, ac = app["accessory"], app["acc_colour"]
    if acc == 1 and view == 1:  # backpack seen from the back
        _trap(
            d,
            y_sh + 0.03 * h,
            cx - 0.7 * tw,
            cx + 0.7 * tw,
            0.43 * h,
            cx - 0.7 * tw,
            cx + 0.7 * tw,
            ac,
        )
    elif acc == 1 and view == 2:  # backpack from the side
        a0, a1 = cx - tw - 0.16 * w, cx - tw + 0.02 * w
        _trap(d, y_sh + 0.03 * h, a0, a1, 0.42 * h, a0, a1, ac)
    elif acc == 1:  # straps
        for s in (-1, 1):
            x = cx + s * tw * 0.55
            _trap(d, y_sh, x - 0.03 * w, x + 0.03 * w, 0.40 * h, x - 0.03 * w, x + 0.03 * w, ac)
    elif acc == 2:  # handbag on one side
        x = cx + (1 if rng.random() < 0.5 else -1) * (tw + 0.10 * w)
        _trap(d, 0.44 * h, x - 0.08 * w, x + 0.08 * w, 0.56 * h, x - 0.09 * w, x + 0.09 * w, ac)
    # head, hair, hat
    hc, hr = (cx, 0.085 * h), (min(0.15 * w, 0.06 * h), 0.072 * h)
    if app["long_hair"]:
        a0, a1 = cx - 1.1 * hr[0], cx + 1.1 * hr[0]
        _trap(d, hc[1], a0, a1, y_sh + 0.05 * h, a0, a1, app["hair"])
    _ellipse(d, hc, hr, app["hair"] if view == 1 else app["skin"])
    if view != 1:
        _ellipse(d, hc, (hr[0] * 1.05, hr[1]), app["hair"], 180, 360)
    if acc == 3:
        _ellipse(d, (hc[0], hc[1] - 0.35 * hr[1]), (1.3 * hr[0], 0.6 * hr[1]), ac, 180, 360)
    # shading: darker towards one side (illumination direction)
    shade = 1.0 - rng.uniform(0.0, 0.25) * np.linspace(0, 1, w)[None, :, None]
    if rng.random() < 0.5:
        shade = shade[:, ::-1]
    return np.clip(d[0] * shade, 0, 255).astype(np.uint8), d[1] > 0


# --------------------------------------------------------------------------------------- #
# Cameras, backgrounds, scenes
# --------------------------------------------------------------------------------------- #
def _camera_style(rng: np.random.Generator) -> Dict[str, Any]:
    gains = rng.uniform(0.75, 1.25, 3)
    return {
        "horizon": float(rng.uniform(0.3, 0.5)),
        "wall": np.array(_colour(rng, _CLOTHES, 30), dtype=np.float32) * 0.7 + 50,
        "wall2": np.array(_colour(rng, _CLOTHES, 30), dtype=np.float32) * 0.6 + 40,
        "ground": np.array(_colour(rng, _CLOTHES[[7, 13, 3, 6, 2]], 25), dtype=np.float32),
        "ground2": np.array(_colour(rng, _CLOTHES, 30), dtype=np.float32) * 0.5 + 60,
        "wall_tex": int(rng.integers(4)),
        "ground_tex": int(rng.integers(3)),
        "tex_scale": float(rng.uniform(0.7, 1.4)),
        "gains": (gains / gains.mean()).astype(np.float32),
        "gamma": float(rng.uniform(0.75, 1.3)),
        "brightness": float(rng.uniform(-25, 20)),
        "downscale": float(rng.choice([1.0, 0.75, 0.55])),
        "blur": float(rng.choice([0.0, 0.6, 1.1])),
        "noise": float(rng.uniform(1.0, 6.0)),
    }


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.random((cells, max(2, cells * w // max(h, 1)))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(style: Dict[str, Any], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    s = style["tex_scale"] * h / 240.0
    hz = int(style["horizon"] * h)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    xo = xx + np.float32(rng.uniform(0, 200) * s)
    yw = yy[:hz]
    t = style["wall_tex"]
    if t == 0:  # bricks
        bh, bw = 12 * s, 30 * s
        sel = ((yw % bh) < 1.5 * s) | (((xo + (np.floor(yw / bh) % 2) * bw / 2) % bw) < 1.5 * s)
    elif t == 1:  # panels
        sel = np.broadcast_to(((xo // (22 * s)) % 2) == 1, (hz, w))
    elif t == 2:  # windows
        sel = ((xo % (52 * s)) > 12 * s) & ((xo % (52 * s)) < 40 * s)
        sel = sel & ((yw % (44 * s)) > 8 * s) & ((yw % (44 * s)) < 32 * s)
    else:  # stained plaster
        sel = _smooth_noise(rng, h, w, 6)[:hz] > 0.6
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:hz] = np.where(sel[..., None], style["wall2"], style["wall"])
    # floor in perspective
    v = (yy[hz:] - hz) / max(h - hz, 1) + 0.08
    u = (xx - w / 2) / v
    g = style["ground_tex"]
    if g == 0:  # tiles
        fsel = ((np.floor(u / (40 * s)) + np.floor(3.0 / v)) % 2) == 1
    elif g == 1:  # stripes
        fsel = (np.floor(u / (30 * s)) % 3) == 0
    else:  # asphalt
        fsel = _smooth_noise(rng, h, w, 12)[hz:] > 0.55
    img[hz:] = np.where(fsel[..., None], style["ground2"], style["ground"])
    img[hz:] *= 0.75 + 0.3 * v[..., None]
    img *= (0.8 + 0.4 * _smooth_noise(rng, h, w, 3))[..., None]  # uneven light
    for _ in range(int(rng.integers(0, 4))):  # clutter: poles, bins, benches, signs
        cw, ch = rng.uniform(0.02, 0.25) * w, rng.uniform(0.05, 0.45) * h
        x0, y1 = rng.uniform(-0.1, 1.0) * w, rng.uniform(hz, h)
        c = np.array(_colour(rng, _CLOTHES, 40), dtype=np.float32) * 0.8
        img[max(0, int(y1 - ch)) : int(y1), max(0, int(x0)) : max(0, int(x0 + cw))] = c
    return np.clip(img, 0, 255).astype(np.uint8)


def _camera_effects(img: np.ndarray, style: Dict[str, Any], rng: np.random.Generator):
    """Colour cast, gain, gamma, brightness (one LUT), resolution loss, blur, noise."""
    h, w = img.shape[:2]
    levels = np.arange(256, dtype=np.float64)[:, None] * style["gains"] * rng.uniform(0.9, 1.1)
    lut = 255.0 * np.clip(levels / 255.0, 0, 1) ** style["gamma"] + style["brightness"]
    img = cv2.LUT(img, np.clip(lut, 0, 255).astype(np.uint8)[None])
    if style["downscale"] < 1:
        small = (max(1, int(w * style["downscale"])), max(1, int(h * style["downscale"])))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h))
    if style["blur"] > 0:
        img = cv2.GaussianBlur(img, (0, 0), style["blur"])
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(style["noise"])
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _render(image: Dict[str, Any], style: Dict[str, Any], size: Tuple[int, int], key: list):
    """Pixels of one planned image (its own random stream: order-independent)."""
    h, w = size
    rng = np.random.default_rng(key + [7, image["index"]])
    img = _background(style, h, w, rng)
    for p in sorted(image["persons"], key=lambda p: p["full"][3]):  # far (high) first
        x1, y1, x2, y2 = p["full"]
        sprite, m = draw_person(p["app"], y2 - y1, x2 - x1, rng)
        vx1, vy1, vx2, vy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        crop = (slice(vy1 - y1, vy2 - y1), slice(vx1 - x1, vx2 - x1))
        region = img[vy1:vy2, vx1:vx2]
        region[m[crop]] = sprite[crop][m[crop]]
    return _camera_effects(img, style, rng)


def _place(rng: np.random.Generator, placed: List[tuple], size: Tuple[int, int], strict: bool):
    """A full person box (x1, y1, x2, y2 ints, may leave the image) with >= 55% inside the
    image and (if ``strict``) covering at most 45% of any placed box; None if not found."""
    h, w = size
    for _ in range(40):
        foot = rng.uniform(0.5, 1.0) * h if rng.random() > 0.1 else rng.uniform(1.0, 1.15) * h
        ph = h * (0.25 + 0.6 * (min(foot / h, 1.0) - 0.5) / 0.5) * rng.uniform(0.9, 1.1)
        pw = ph * rng.uniform(0.34, 0.42)
        cx = rng.uniform(-0.05, 1.05) * w
        box = (
            int(round(cx - pw / 2)),
            int(round(foot - ph)),
            int(round(cx + pw / 2)),
            int(round(foot)),
        )
        vis = (min(box[2], w) - max(box[0], 0), min(box[3], h) - max(box[1], 0))
        area = (box[2] - box[0]) * (box[3] - box[1])
        if vis[0] < max(4, 0.55 * (box[2] - box[0])) or vis[1] < max(8, 0.55 * (box[3] - box[1])):
            continue
        ok = True
        for q in placed if strict else []:
            iw = min(box[2], q[2]) - max(box[0], q[0])
            ih = min(box[3], q[3]) - max(box[1], q[1])
            qa = (q[2] - q[0]) * (q[3] - q[1])
            if iw > 0 and ih > 0 and iw * ih > 0.45 * min(area, qa):
                ok = False
                break
        if ok:
            return box
    return None


# --------------------------------------------------------------------------------------- #
# Planning: which identities appear where
# --------------------------------------------------------------------------------------- #
def _plan(p: Dict[str, Any], rng: np.random.Generator):
    """Images (split, camera, persons with full boxes) and identities (split, appearance,
    image indices; the first image is the query's)."""
    size, cams = tuple(p["image_size"]), p["num_cams"]
    images: List[Dict[str, Any]] = []
    for split in ("train", "test"):
        n = p[f"num_{split}_images"]
        for cam in rng.permutation(np.arange(n) % cams):
            images.append({"index": len(images), "split": split, "cam": int(cam), "ids": []})
    identities: List[Dict[str, Any]] = []
    for code, split in enumerate(("train", "test")):
        members = [im for im in images if im["split"] == split]
        for k in range(p[f"num_{split}_ids"]):
            ident = {
                "split": split,
                "app": random_appearance(np.random.default_rng(p["key"] + [3, code, k])),
                "images": [],
            }
            order = rng.permutation(cams)
            for t in range(int(rng.integers(p["appearances"][0], p["appearances"][1] + 1))):
                free = [
                    im
                    for im in members
                    if im["index"] not in ident["images"]
                    and len(im["ids"]) < p["max_labeled_per_image"]
                ]
                pool = [im for im in free if im["cam"] == order[t % cams]] or free
                if not pool:
                    raise ValueError(
                        f"Too few {split} images ({len(members)}) for {p[f'num_{split}_ids']} "
                        f"identities x {p['appearances']} appearances with at most "
                        f"{p['max_labeled_per_image']} labelled persons per image"
                    )
                loads = np.array([len(im["ids"]) for im in pool])
                best = [im for im, load in zip(pool, loads) if load == loads.min()]
                im = best[int(rng.integers(len(best)))]
                im["ids"].append(len(identities))
                ident["images"].append(im["index"])
            identities.append(ident)
    for im in images:
        persons, boxes = [], []
        for i in im["ids"]:
            box = _place(rng, boxes, size, True) or _place(rng, boxes, size, False)
            if box is None:
                raise RuntimeError(f"Could not place a person in a {size} image")
            boxes.append(box)
            persons.append({"id": i, "app": identities[i]["app"], "full": box})
        for _ in range(
            int(rng.integers(p["unlabeled_per_image"][0], p["unlabeled_per_image"][1] + 1))
        ):
            box = _place(rng, boxes, size, True)
            if box is not None:
                boxes.append(box)
                persons.append({"id": None, "app": random_appearance(rng), "full": box})
        im["persons"] = [persons[j] for j in rng.permutation(len(persons))]
        for q in im["persons"]:
            x1, y1, x2, y2 = q["full"]
            q["visible"] = (max(x1, 0), max(y1, 0), min(x2, size[1]), min(y2, size[0]))
    return images, identities


# --------------------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------------------- #
def _savemat_bytes(mdict: Dict[str, Any]) -> bytes:
    """``savemat`` output with a fixed header text (scipy writes the creation time there)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, mdict, format="5", oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by reid_plugins.data.synthetic_scenes".ljust(116)
    return bytes(data)


def _struct(rows: List[Dict[str, Any]], fields: Sequence[str]) -> np.ndarray:
    """1 x len(rows) MATLAB struct array."""
    arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, r in enumerate(rows):
        for f in fields:
            arr[f][0, i] = r[f]
    return arr


def _cell(values: List[Any]) -> np.ndarray:
    """len(values) x 1 MATLAB cell array."""
    arr = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        arr[i, 0] = v
    return arr


class _Writer:
    def __init__(self, base: str):
        self.base, self.files = base, {}

    def write(self, rel: str, data: bytes) -> None:
        path = os.path.join(self.base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.files[rel.replace(os.sep, "/")] = {
            "bytes": len(data),
            "sha1": hashlib.sha1(data).hexdigest(),
        }


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _xywh(box: tuple) -> np.ndarray:
    return np.array([[box[0], box[1], box[2] - box[0], box[3] - box[1]]], dtype=np.float64)


def _write_cuhk(w: _Writer, images, identities, p, rng, render) -> Dict[str, Any]:
    nums = rng.permutation(len(images)) + 1
    names = [f"s{k}.jpg" for k in nums]
    for im in render:
        w.write(f"Image/SSM/{names[im['index']]}", _jpeg(im["pixels"]))
    order = np.argsort(nums, kind="stable")
    img_rows = []
    for i in order:
        boxes = [{"idlocate": _xywh(q["visible"])} for q in images[i]["persons"]]
        img_rows.append(
            {"imname": names[i], "nAppear": float(len(boxes)), "box": _struct(boxes, ["idlocate"])}
        )
    w.write(
        "annotation/Images.mat",
        _savemat_bytes({"Img": _struct(img_rows, ["imname", "nAppear", "box"])}),
    )
    pool = [names[i] for i in order if images[i]["split"] == "test"]
    w.write("annotation/pool.mat", _savemat_bytes({"pool": _cell(pool)}))

    def entry(i: int, j: int, present: bool = True) -> Dict[str, Any]:
        """(imname, idlocate, ishard) of identity i in image j (idlocate empty if absent)."""
        box = np.zeros((0, 0))
        if present:
            box = _xywh(next(q for q in images[j]["persons"] if q["id"] == i)["visible"])
        return {"imname": names[j], "idlocate": box, "ishard": 0.0}

    gal_fields, train, queries = ["imname", "idlocate", "ishard"], [], []
    for i, ident in enumerate(identities):
        idname = f"p{i + 1}"
        if ident["split"] == "test":
            queries.append((i, idname))
            continue
        scene = _struct([entry(i, j) for j in ident["images"]], gal_fields)
        row = {"idname": idname, "nAppear": float(scene.size), "scene": scene}
        train.append(_struct([row], ["idname", "nAppear", "scene"]))
    proto = "annotation/test/train_test"
    w.write(f"{proto}/Train.mat", _savemat_bytes({"Train": _cell(train)}))
    test_idx = [im["index"] for im in images if im["split"] == "test"]
    sizes = [n for n in CUHK_GALLERY_SIZES if n <= len(test_idx) - 1]
    distractors = {}
    for i, _ in queries:
        others = [j for j in test_idx if j not in identities[i]["images"]]
        distractors[i] = [others[k] for k in rng.permutation(len(others))]
    for n in sizes:
        rows = []
        for i, idname in queries:
            first, *rest = identities[i]["images"]
            gal = [entry(i, j) for j in rest]
            gal += [entry(i, j, False) for j in distractors[i][: n - len(gal)]]
            query = {**entry(i, first), "idname": idname}
            rows.append(
                {
                    "Query": _struct([query], gal_fields + ["idname"]),
                    "Gallery": _struct(gal, gal_fields),
                }
            )
        testg = _struct(rows, ["Query", "Gallery"])
        w.write(f"{proto}/TestG{n}.mat", _savemat_bytes({f"TestG{n}": testg}))
    return {"gallery_sizes": sizes, "num_queries": len(queries)}


def _write_prw(w: _Writer, images, identities, p, rng, render) -> Dict[str, Any]:
    h, wd = p["image_size"]
    counts = [0] * p["num_cams"]
    names = [""] * len(images)
    for i in rng.permutation(len(images)):
        cam = images[i]["cam"]
        c, counts[cam] = counts[cam], counts[cam] + 1
        names[i] = f"c{cam + 1}s{1 + c // 50}_{25 * (c % 50 + 1):06d}"
    raw = rng.permutation(len(identities)) + 1  # raw PRW ids
    for im in render:
        w.write(f"frames/{names[im['index']]}.jpg", _jpeg(im["pixels"]))

    def row(q) -> List[float]:
        x1, y1, x2, y2 = q["full"]  # left / top keep negative values, right / bottom clipped
        pid = -2 if q["id"] is None else int(raw[q["id"]])
        return [pid, x1, y1, min(x2, wd) - x1, min(y2, h) - y1]

    for im in images:
        key = "anno_file" if im["index"] % 11 == 5 else "box_new"
        key = "anno_previous" if im["index"] % 13 == 7 else key
        rows = np.array([row(q) for q in im["persons"]], dtype=np.float64).reshape(-1, 5)
        w.write(f"annotations/{names[im['index']]}.jpg.mat", _savemat_bytes({key: rows}))
    for split, fname, key in (
        ("train", "frame_train.mat", "img_index_train"),
        ("test", "frame_test.mat", "img_index_test"),
    ):
        frames = sorted(names[im["index"]] for im in images if im["split"] == split)
        w.write(fname, _savemat_bytes({key: _cell(frames)}))
        ids = sorted(int(raw[i]) for i, d in enumerate(identities) if d["split"] == split)
        w.write(
            f"ID_{split}.mat", _savemat_bytes({f"ID_{split}": np.array([ids], dtype=np.float64)})
        )
    lines = []
    for i, ident in enumerate(identities):
        if ident["split"] != "test":
            continue
        seen = set()
        for j in ident["images"]:
            if images[j]["cam"] in seen:
                continue
            seen.add(images[j]["cam"])
            q = next(q for q in images[j]["persons"] if q["id"] == i)
            v = row(q)
            lines.append(f"{v[0]} {v[1]:g} {v[2]:g} {v[3]:g} {v[4]:g} {names[j]}\n")
    w.write("query_info.txt", "".join(lines).encode())
    return {"num_queries": len(lines)}


# --------------------------------------------------------------------------------------- #
# Entry points
# --------------------------------------------------------------------------------------- #
def _read_manifest(out: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(out, _MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _files_ok(out: str, manifest: Dict[str, Any]) -> bool:
    for rel, info in manifest.get("files", {}).items():
        path = os.path.join(out, rel)
        if not os.path.isfile(path) or os.path.getsize(path) != info["bytes"]:
            return False
    return True


def generate_synthetic_scenes(
    root: str,
    *,
    seed: int = 0,
    fmt: str = "cuhk_sysu",
    num_train_images: int = 200,
    num_test_images: int = 120,
    num_train_ids: int = 50,
    num_test_ids: int = 30,
    num_cams: int = 6,
    image_size: Tuple[int, int] = (240, 320),
    appearances: Tuple[int, int] = (2, 5),
    max_labeled_per_image: int = 3,
    unlabeled_per_image: Tuple[int, int] = (1, 3),
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Generate (or reuse) a synthetic person-search dataset; returns its folder.

    Args:
        root: datasets root; the data goes to ``<root>/synthetic_<fmt>``.
        seed: random seed; the same arguments give byte-identical files.
        fmt: ``"cuhk_sysu"`` or ``"prw"`` (layouts in the module docstring).
        num_train_images, num_test_images: scene images per split (cuhk_sysu needs at least
            11 test images: the smallest protocol is TestG10).
        num_train_ids, num_test_ids: labelled identities per split (disjoint).
        num_cams: cameras (each a colour cast / illumination / resolution / blur / noise /
            background style); an identity's appearances are spread over different cameras.
        image_size: ``(height, width)`` of every image.
        appearances: ``(min, max)`` images per labelled identity (min >= 2).
        max_labeled_per_image: at most this many labelled persons per image.
        unlabeled_per_image: ``(min, max)`` unlabelled persons per image (fewer when no room).
        overwrite: replace existing data generated with other arguments.
        progress: show a tqdm bar.

    Raises:
        ValueError: bad arguments, or the folder holds data generated with other arguments
            and ``overwrite`` is False.
        FileExistsError: the folder exists but was not written by this function.
    """
    out = synthetic_scenes_dir(root, fmt)
    params = {
        "fmt": fmt, "seed": int(seed), "num_train_images": int(num_train_images),
        "num_test_images": int(num_test_images), "num_train_ids": int(num_train_ids),
        "num_test_ids": int(num_test_ids), "num_cams": int(num_cams),
        "image_size": [int(v) for v in image_size], "appearances": [int(v) for v in appearances],
        "max_labeled_per_image": int(max_labeled_per_image),
        "unlabeled_per_image": [int(v) for v in unlabeled_per_image],
    }  # fmt: skip
    if appearances[0] < 2 or appearances[1] < appearances[0]:
        raise ValueError(f"appearances must be (min, max) with 2 <= min <= max, got {appearances}")
    if min(image_size) < 32 or num_cams < 1 or max_labeled_per_image < 1:
        raise ValueError("image_size must be >= 32 pixels, num_cams and max_labeled_per_image >= 1")
    if fmt == "cuhk_sysu" and num_test_images < CUHK_GALLERY_SIZES[0] + 1:
        raise ValueError(f"fmt='cuhk_sysu' needs num_test_images >= {CUHK_GALLERY_SIZES[0] + 1}")
    manifest = _read_manifest(out)
    same = manifest is not None and manifest.get("params") == params
    if same and manifest.get("version") == _VERSION and _files_ok(out, manifest):
        return out
    if os.path.exists(out) and not same:  # same arguments: stale version / damaged, redo
        if manifest is None:
            raise FileExistsError(
                f"{out} exists but has no {_MANIFEST}: it was not written by "
                "generate_synthetic_scenes; move it away first"
            )
        if not overwrite:
            raise ValueError(
                f"{out} holds synthetic data generated with {manifest.get('params')}; "
                f"pass overwrite=True (--overwrite) to regenerate it with {params}"
            )
    tmp = f"{out}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts, files = _generate(tmp, params, progress)
        manifest = {
            "generator": "reid_plugins.data.synthetic_scenes",
            "version": _VERSION,
            "params": params,
            "counts": counts,
            "files": files,
        }
        with open(os.path.join(tmp, _MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out):
        shutil.rmtree(out)
    try:
        os.rename(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        other = _read_manifest(out)
        if other is None or other.get("params") != params:
            raise
    return out


def _generate(folder: str, params: Dict[str, Any], progress: bool = True):
    """Plan, render and write one dataset into ``folder``; returns (counts, files)."""
    fmt, cams = params["fmt"], params["num_cams"]
    key = [params["seed"], FORMATS.index(fmt)]  # the two layouts are different domains
    rng = np.random.default_rng(key + [1])
    images, identities = _plan({**params, "key": key}, rng)
    styles = [_camera_style(np.random.default_rng(key + [2, c])) for c in range(cams)]
    size = tuple(params["image_size"])
    render = (
        {"index": im["index"], "pixels": _render(im, styles[im["cam"]], size, key)}
        for im in tqdm(images, desc=f"synthetic_{fmt}", disable=not progress, leave=False)
    )
    writer = _Writer(folder)
    write = _write_cuhk if fmt == "cuhk_sysu" else _write_prw
    extra = write(writer, images, identities, params, rng, render)
    counts = {
        "num_images": len(images),
        "num_boxes": sum(len(im["persons"]) for im in images),
        "num_labeled_boxes": sum(q["id"] is not None for im in images for q in im["persons"]),
        **extra,
    }
    return counts, writer.files


def ensure_synthetic_scenes(root: str, fmt: str) -> str:
    """``<root>/synthetic_<fmt>`` if it holds generated data (any arguments), else generate it
    with the defaults of :func:`generate_synthetic_scenes`. Used by the registered
    ``synthetic_cuhk_sysu_*`` / ``synthetic_prw_*`` datasets."""
    out = synthetic_scenes_dir(root, fmt)
    if _read_manifest(out) is not None:
        return out
    return generate_synthetic_scenes(root, fmt=fmt)
