"""Rendering of the synthetic person-search scenes (pixels only, no file layout).

Used by :func:`reid_plugins.data.synthetic_scenes.generate_synthetic_scenes`:

* :func:`random_appearance` / :func:`draw_person`: persons with a fixed appearance (skin,
  hair, clothing colours and pattern, trousers / shorts / skirt, build, backpack / handbag /
  hat) drawn from front, back or side views.
* :func:`camera_style`: a camera's look (background walls and floor textures, colour cast,
  gain, gamma, brightness, resolution loss, blur, noise).
* :func:`render_scene`: one planned image (background, clutter, persons far to near, camera
  effects) from its own random stream, so images can be rendered in any order.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import cv2
import numpy as np

__all__ = ["random_appearance", "draw_person", "camera_style", "render_scene", "OCCLUDER_PROB"]

#: Chance that an object in front hides the lower part of a person (CUHK-SYSU marks ~11 % of
#: its test queries as occluded / low resolution; PRW's street scenes hold bikes and benches).
OCCLUDER_PROB = 0.12


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
def camera_style(rng: np.random.Generator) -> Dict[str, Any]:
    """A random camera style (background textures and colours, camera effects)."""
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


def render_scene(image: Dict[str, Any], style: Dict[str, Any], size: Tuple[int, int], key: list):
    """Pixels (uint8 ``(h, w, 3)`` RGB) of one planned image of ``size = (h, w)`` seen with a
    :func:`camera_style`; its own random stream (seeded by ``key`` and the image index) makes
    the result independent of the rendering order."""
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
        if rng.random() < OCCLUDER_PROB:  # a bench / bin / car in front of the legs
            top = int(round(y1 + rng.uniform(0.55, 0.8) * (y2 - y1)))
            ox1 = int(round(x1 + rng.uniform(-0.5, 0.3) * (x2 - x1)))
            ox2 = ox1 + int(round(rng.uniform(0.6, 1.5) * (x2 - x1)))
            colour = np.array(_colour(rng, _CLOTHES, 40), dtype=np.float32) * 0.7
            img[max(top, 0) : max(min(y2, h), 0), max(ox1, 0) : max(min(ox2, w), 0)] = colour
    return _camera_effects(img, style, rng)
