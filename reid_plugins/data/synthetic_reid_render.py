"""Rendering of the synthetic ReID benchmark (:mod:`reid_plugins.data.synthetic_reid`):
domain and camera styles, identity appearances and the drawing of one image.

* :func:`domain_style`: a domain's photometric / viewpoint style (a named preset
  :data:`DOMAIN_PRESETS` or one drawn from the seed); ``_camera_style`` perturbs it per camera.
* :func:`sample_identity`: the appearance of one person (clothing, body shape, accessories).
* :func:`render_image`: one RGB image of an identity (or background only) under a camera
  style: background, drawn person in a random pose, occluders, photometric degradations.

Every function is deterministic given its arguments (random draws come from the generator
passed in, or from ``_rng(*key)``), so the generator writes byte-identical files for the same
seed. Public names are re-exported by
:mod:`reid_plugins.data.synthetic_reid`.
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

__all__ = [
    "BACKGROUNDS",
    "DOMAIN_PRESETS",
    "domain_style",
    "sample_identity",
    "render_image",
]

BACKGROUNDS = ("pavement", "tiles", "gradient", "shopfront", "foliage")

# Domain styles. gains: RGB colour cast; brightness: additive (0-255 scale); blur: Gaussian
# sigma in output pixels; resolution: down-sampling factor before up-sampling back; noise:
# Gaussian std; person_scale: person height / image height; shift: max horizontal shift
# (fraction of width); crop_prob: probability of a partial (cut) person.
# side_prob / occlusion_prob: probability of a side view / of an occluder (pole, object).
# cam_jitter: spread of the per-camera colour response and exposure (x the base spread);
# clothing: the domain's clothing prior (season / place, see _CLOTHING); the layout keys
# (num_cams, ids_factor, test_ids_factor, images_per_id) are read by the planner in
# reid_plugins.data.synthetic_reid. Each preset imitates one real dataset of the M3L / GMN
# leave-one-out protocol; the real statistic behind each value is in the comment next to it
# (M3L, CVPR 2021, Table 1; the dataset papers; images per identity are half the real ratio
# so that four domains generate in about a minute).
# fmt: off
DOMAIN_PRESETS: Dict[str, Dict[str, Any]] = {
    "synA": dict(  # ~ Market-1501: summer campus, 6 outdoor cameras, bright, sharp 128x64 DPM crops
        gains=(1.15, 1.03, 0.82), saturation=1.1, brightness=18.0, contrast=1.1, gamma=0.9,
        blur=0.0, resolution=1.0, noise=2.0, background="pavement",
        bg_colors=((172, 160, 138), (118, 112, 98)), person_scale=0.92, shift=0.04,
        crop_prob=0.05, side_prob=0.2, occlusion_prob=0.05, cam_jitter=1.0,
        clothing="summer",
        num_cams=6,            # Market-1501: 6 cameras
        ids_factor=1.0,        # 751 train ids (reference)
        test_ids_factor=1.0,   # 750 test ids
        images_per_id=8.6,     # 12,936 / 751 = 17.2 train images per id (halved)
    ),
    "synB": dict(  # ~ DukeMTMC-reID: winter campus, 8 HD outdoor cameras, darker, many occlusions
        gains=(0.82, 0.98, 1.22), saturation=0.8, brightness=-35.0, contrast=0.75, gamma=1.0,
        blur=0.6, resolution=0.75, noise=9.0, background="tiles",
        bg_colors=((92, 100, 122), (58, 60, 72)), person_scale=0.84, shift=0.10,
        crop_prob=0.1, side_prob=0.25, occlusion_prob=0.3, cam_jitter=1.0,
        clothing="winter",
        num_cams=8,            # DukeMTMC-reID: 8 cameras
        ids_factor=0.93,       # 702 train ids / 751
        test_ids_factor=1.0,   # 702 query ids (+ 408 distractor ids)
        images_per_id=11.8,    # 16,522 / 702 = 23.5 (halved)
    ),
    "synC": dict(  # ~ CUHK03 (detected): 2 indoor cameras, low-resolution, blurry, tight crops
        gains=(1.0, 1.0, 1.0), saturation=0.45, brightness=0.0, contrast=0.9, gamma=1.1,
        blur=0.9, resolution=0.4, noise=4.0, background="gradient",
        bg_colors=((205, 205, 198), (110, 110, 116)), person_scale=1.0, shift=0.03,
        crop_prob=0.35, side_prob=0.3, occlusion_prob=0.1, cam_jitter=1.5,
        clothing="mixed",
        num_cams=2,            # CUHK03: 2 cameras per pair
        ids_factor=1.0,        # 767 train ids (CUHK-NP detected) / 751
        test_ids_factor=2.0,   # 700 test ids, 1,400 queries; doubled: >= 700 queries here
        images_per_id=4.8,     # 7,365 / 767 = 9.6 (halved)
    ),
    "synD": dict(  # ~ MSMT17: 15 in/outdoor cameras, morning/noon/afternoon light, most ids
        gains=(1.12, 0.82, 1.08), saturation=1.25, brightness=-8.0, contrast=1.3, gamma=1.25,
        blur=0.3, resolution=0.6, noise=5.0, background="shopfront",
        bg_colors=((62, 40, 72), (182, 150, 62)), person_scale=0.78, shift=0.14,
        crop_prob=0.05, side_prob=0.35, occlusion_prob=0.15, cam_jitter=3.0,
        clothing="winter_mixed",
        num_cams=9,            # MSMT17: 15 cameras (Market names hold one digit: 9)
        ids_factor=1.39,       # 1,041 train ids / 751
        test_ids_factor=0.8,   # 3,060 test ids (2.9x train); 0.8x: ~1,100 queries suffice
        images_per_id=15.7,    # 32,621 / 1,041 = 31.3 (halved)
    ),
}
# Clothing priors: the seasons and places of the real datasets (Market-1501 was filmed in
# summer: light, saturated clothes, short sleeves; DukeMTMC-reID in winter: dark coats, long
# sleeves; MSMT17 in winter with many indoor scenes). sat/val: HSV saturation and value
# ranges; achromatic: share of grey/black/white garments.
_CLOTHING: Dict[str, Dict[str, Any]] = {
    "summer": dict(sat=(90, 256), val=(110, 256), achromatic=0.2, long_sleeves=0.25,
                   shorts=0.35, dark_bottom=0.4),
    "winter": dict(sat=(40, 200), val=(40, 170), achromatic=0.5, long_sleeves=0.97,
                   shorts=0.02, dark_bottom=0.8),
    "mixed": dict(sat=(70, 256), val=(70, 256), achromatic=0.25, long_sleeves=0.6,
                  shorts=0.2, dark_bottom=0.6),
    "winter_mixed": dict(sat=(50, 230), val=(50, 210), achromatic=0.4, long_sleeves=0.85,
                         shorts=0.05, dark_bottom=0.7),
}
# fmt: on
_BOTTOM_PALETTE = ((40, 60, 110), (25, 25, 28), (95, 95, 100), (170, 150, 110), (70, 50, 35))
_SKIN = ((241, 194, 167), (224, 172, 135), (198, 134, 96), (141, 85, 54), (92, 56, 38))
_HAIR = ((20, 16, 14), (60, 40, 25), (110, 75, 40), (200, 170, 110), (130, 130, 130))


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _domain_key(domain: str) -> int:
    return zlib.crc32(domain.encode("utf-8"))


def _hsv_colour(
    rng: np.random.Generator,
    achromatic_prob: float = 0.25,
    sat: Tuple[int, int] = (70, 256),
    val: Tuple[int, int] = (70, 256),
) -> Tuple[float, ...]:
    if rng.random() < achromatic_prob:
        v = float(rng.uniform(max(20, val[0] - 50), min(235, val[1])))
        return (v, v, v)
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(*sat), rng.integers(*val)]]])
    return tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def domain_style(domain: str, seed: int = 0) -> Dict[str, Any]:
    """Style of ``domain``: its preset, or one drawn from ``(seed, domain)`` otherwise."""
    if domain in DOMAIN_PRESETS:
        return dict(DOMAIN_PRESETS[domain])
    r = _rng(seed, _domain_key(domain), 7)
    return dict(
        gains=tuple(float(g) for g in r.uniform(0.8, 1.2, 3)),
        saturation=float(r.uniform(0.4, 1.3)),
        brightness=float(r.uniform(-35, 20)),
        contrast=float(r.uniform(0.75, 1.3)),
        gamma=float(r.uniform(0.85, 1.3)),
        blur=float(r.uniform(0.0, 1.0)),
        resolution=float(r.choice([1.0, 0.75, 0.6, 0.4])),
        noise=float(r.uniform(1, 9)),
        background=str(r.choice(BACKGROUNDS)),
        bg_colors=(_hsv_colour(r, 0.5), _hsv_colour(r, 0.5)),
        person_scale=float(r.uniform(0.78, 1.0)),
        shift=float(r.uniform(0.02, 0.14)),
        crop_prob=float(r.uniform(0.0, 0.3)),
        side_prob=float(r.uniform(0.1, 0.4)),
        occlusion_prob=float(r.uniform(0.0, 0.2)),
        cam_jitter=float(r.uniform(1.0, 2.0)),
        clothing=str(r.choice(sorted(_CLOTHING))),
        num_cams=int(r.integers(3, 7)),
        ids_factor=float(r.uniform(0.8, 1.2)),
        test_ids_factor=1.0,
        images_per_id=float(r.uniform(5.0, 12.0)),
    )


def _camera_style(style: Dict[str, Any], seed: int, domain: str, cam: int) -> Dict[str, Any]:
    """Per-camera perturbation of a domain style: colour response (gains), exposure
    (brightness, gamma), focus (blur), background, person scale and the share of back views,
    spread by the domain's ``cam_jitter``."""
    r = _rng(seed, _domain_key(domain), 11, cam)
    j = float(style.get("cam_jitter", 1.0))
    cam_style = dict(style)
    cam_style["gains"] = tuple(
        float(g) * float(np.exp(r.normal(0, 0.04 * j))) for g in style["gains"]
    )
    cam_style["brightness"] = style["brightness"] + float(r.normal(0, 6 * j))
    cam_style["gamma"] = style["gamma"] * float(np.exp(r.normal(0, 0.05 * j)))
    cam_style["blur"] = style["blur"] + float(r.uniform(0, 0.3))
    cam_style["bg_colors"] = tuple(
        tuple(float(np.clip(c + r.normal(0, 15), 0, 255)) for c in col)
        for col in style["bg_colors"]
    )
    cam_style["person_scale"] = style["person_scale"] * float(r.uniform(0.96, 1.04))
    cam_style["back_prob"] = float(r.uniform(0.2, 0.8))
    return cam_style


def sample_identity(rng: np.random.Generator, clothing: Optional[str] = None) -> Dict[str, Any]:
    """Appearance of one person (colours RGB 0-255, shape factors, pattern, accessories).

    ``clothing`` names a prior of :data:`_CLOTHING` (a domain's season / place); None keeps
    the neutral prior ("mixed")."""
    c = _CLOTHING[clothing or "mixed"]
    col = dict(achromatic_prob=c["achromatic"], sat=c["sat"], val=c["val"])
    top = _hsv_colour(rng, **col)
    if rng.random() < c["dark_bottom"]:
        base = _BOTTOM_PALETTE[rng.integers(len(_BOTTOM_PALETTE))]
        bottom = tuple(float(np.clip(v + rng.normal(0, 12), 0, 255)) for v in base)
    else:
        bottom = _hsv_colour(rng, **col)
    return dict(
        top=top,
        top2=_hsv_colour(rng, **col),
        top_pattern=str(
            rng.choice(["plain", "hstripes", "vstripes", "checks"], p=[0.45, 0.25, 0.1, 0.2])
        ),
        period=int(rng.integers(4, 9)),
        long_sleeves=bool(rng.random() < c["long_sleeves"]),
        bottom=bottom,
        bottom2=_hsv_colour(rng, **col),
        bottom_pattern=str(rng.choice(["plain", "hstripes"], p=[0.8, 0.2])),
        shorts=bool(rng.random() < c["shorts"]),
        skin=_SKIN[rng.integers(len(_SKIN))],
        hair=_HAIR[rng.integers(len(_HAIR))],
        shoes=(30.0, 30.0, 30.0) if rng.random() < 0.7 else (225.0, 225.0, 225.0),
        width=float(rng.uniform(0.8, 1.2)),
        height=float(rng.uniform(0.88, 1.0)),
        legs=float(rng.uniform(0.44, 0.52)),
        hat=_hsv_colour(rng) if rng.random() < 0.2 else None,
        bag=str(rng.choice(["none", "backpack", "handbag", "shoulder"], p=[0.5, 0.2, 0.15, 0.15])),
        bag_colour=_hsv_colour(rng),
    )


# ----------------------------------------------------------------------------- drawing


def _background(h: int, w: int, style: Dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    c1, c2 = (np.array(c, np.float32) for c in style["bg_colors"])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = style["background"]
    if kind == "pavement":
        s = rng.uniform(14, 20)
        ox, oy = rng.uniform(0, s, 2)
        grout = (np.mod(xx + ox, s) < 2) | (np.mod(yy + oy, s * 0.6) < 2)
        img = np.where(grout[..., None], c2, c1)
        img = img + rng.normal(0, 10, (h, w, 1)).astype(np.float32)
    elif kind == "tiles":
        s = rng.uniform(10, 16)
        ox, oy = rng.uniform(0, 2 * s, 2)
        chk = ((np.floor((xx + ox) / s) + np.floor((yy + oy) / s)) % 2).astype(bool)
        img = np.where(chk[..., None], c1, 0.5 * (c1 + c2))
        img = np.where(
            ((np.mod(xx + ox, s) < 1.5) | (np.mod(yy + oy, s) < 1.5))[..., None], c2, img
        )
    elif kind == "gradient":
        t = (yy / max(h - 1, 1))[..., None]
        img = c1 * (1 - t) + c2 * t
        floor = int(h * rng.uniform(0.7, 0.85))
        img[floor : floor + 2] = c2 * 0.7
    elif kind == "shopfront":
        img = np.empty((h, w, 3), np.float32)
        x = 0
        while x < w:
            sw = int(rng.integers(6, 20))
            a = rng.uniform(0, 1)
            img[:, x : x + sw] = c1 * a + c2 * (1 - a)
            x += sw
        band = int(h * rng.uniform(0.15, 0.3))
        img[band : band + 3] *= 0.5
    else:  # foliage
        img = np.empty((h, w, 3), np.float32)
        img[:] = c1
        for _ in range(int(rng.integers(15, 30))):
            col = c2 * rng.uniform(0.6, 1.3)
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(img, centre, int(rng.integers(3, 10)), col.tolist(), -1)
    return img.astype(np.float32)


def _pattern(h, w, a, b, kind: str, period: int, origin: Tuple[int, int]) -> np.ndarray:
    if kind == "plain":
        out = np.empty((h, w, 3), np.float32)
        out[:] = a
        return out
    yy, xx = np.mgrid[0:h, 0:w]
    ys = ((yy - origin[1]) // period) % 2 == 1
    xs = ((xx - origin[0]) // period) % 2 == 1
    sel = {"hstripes": ys, "vstripes": xs, "checks": ys ^ xs}[kind]
    return np.where(sel[..., None], np.float32(b), np.float32(a)).astype(np.float32)


def _paint(canvas: np.ndarray, draw, fill) -> None:
    mask = np.zeros(canvas.shape[:2], np.uint8)
    draw(mask)
    sel = mask > 0
    canvas[sel] = fill[sel] if isinstance(fill, np.ndarray) else fill


def _rect(canvas: np.ndarray, p0, p1, fill) -> None:
    _paint(canvas, lambda m: cv2.rectangle(m, p0, p1, 255, -1), fill)


def _draw_person(canvas: np.ndarray, ident: Dict[str, Any], pose: Dict[str, Any]) -> None:
    """Draw ``ident`` on ``canvas`` (float RGB) at ``pose``.

    ``pose``: ``cx, top, height`` (pixels), ``back`` (back view: mirrored, bag on the other
    side, no face), ``side_view`` (narrow torso, one arm in front, long stride), ``spread``
    (leg stride 0..1), ``swing`` (arm swing in pixels).
    """
    h, w = canvas.shape[:2]
    ph = pose["height"] * ident["height"]
    top = pose["top"] + (pose["height"] - ph)
    cx = pose["cx"]
    side = -1 if pose["back"] else 1
    sv = pose["side_view"]
    u = ph * 0.24 * ident["width"] * (0.62 if sv else 1.0)

    def Y(f):
        return int(round(top + f * ph))

    def X(dx):
        return int(round(cx + side * dx))

    hip = 0.95 - ident["legs"]
    arm_w = max(int(round(ph * 0.06)), 2)

    def draw_arm(xa: float, dy: int) -> None:
        x0 = int(round(xa - arm_w / 2))
        y0, y1 = Y(0.16) + dy, Y(hip + 0.02) + dy
        sleeve_end = y1 if ident["long_sleeves"] else Y(0.26)
        _rect(canvas, (x0, y0), (x0 + arm_w - 1, sleeve_end), ident["top"])
        if not ident["long_sleeves"]:
            _rect(canvas, (x0, sleeve_end), (x0 + arm_w - 1, y1), ident["skin"])

    if not sv:  # arms at the torso edges, drawn first
        for s in (-1, 1):
            draw_arm(cx + s * (u / 2 + arm_w / 2), int(s * pose["swing"]))
    # legs (trousers or shorts, plain or striped), shoes
    leg_w = max(int(round(u * (0.6 if sv else 0.45))), 2)
    gap = int(round(pose["spread"] * u * (0.9 if sv else 0.2)))
    legs_fill = _pattern(
        h,
        w,
        ident["bottom"],
        ident["bottom2"],
        ident["bottom_pattern"],
        ident["period"],
        (0, Y(hip)),
    )
    ybot = Y(0.955)
    yshort = Y(hip + 0.16) if ident["shorts"] else ybot
    for s in (-1, 1):
        xl = int(round(cx + s * (gap / 2 + leg_w / 2) - leg_w / 2))
        _rect(canvas, (xl, Y(hip)), (xl + leg_w - 1, yshort), legs_fill)
        if ident["shorts"]:
            _rect(canvas, (xl, yshort), (xl + leg_w - 1, ybot), ident["skin"])
        _rect(canvas, (xl - 1, ybot), (xl + leg_w, Y(1.0)), ident["shoes"])
    # torso (slightly tapered), clothing pattern anchored at the shoulders
    pts = np.array(
        [
            [cx - u / 2, Y(0.14)],
            [cx + u / 2, Y(0.14)],
            [cx + u * 0.45, Y(hip + 0.03)],
            [cx - u * 0.45, Y(hip + 0.03)],
        ],
        np.int32,
    )
    torso_fill = _pattern(
        h,
        w,
        ident["top"],
        ident["top2"],
        ident["top_pattern"],
        ident["period"],
        (int(cx - u / 2), Y(0.14)),
    )
    _paint(canvas, lambda m: cv2.fillConvexPoly(m, pts, 255), torso_fill)
    if sv:  # one arm in front of the torso
        draw_arm(cx + side * u * 0.1, int(pose["swing"]))
    # head (face or back of the head), hair, hat
    head_c = (int(round(cx)), Y(0.07))
    axes = (max(int(round(ph * 0.05)), 2), max(int(round(ph * 0.065)), 2))
    face = ident["hair"] if pose["back"] else ident["skin"]
    _paint(canvas, lambda m: cv2.ellipse(m, head_c, axes, 0, 0, 360, 255, -1), face)
    _paint(canvas, lambda m: cv2.ellipse(m, head_c, axes, 0, 180, 360, 255, -1), ident["hair"])
    if ident["hat"] is not None:
        hx0, hx1 = head_c[0] - axes[0] - 2, head_c[0] + axes[0] + 2
        _rect(canvas, (hx0, Y(0.015)), (hx1, Y(0.045)), ident["hat"])
    # bag
    bag, col = ident["bag"], ident["bag_colour"]
    if bag == "backpack":
        if sv:  # seen from the side: sticks out behind the torso
            xb = X(-u / 2) if not pose["back"] else X(u / 2)
            _rect(canvas, (xb - 3, Y(0.17)), (xb + 3, Y(0.4)), col)
        elif pose["back"]:
            _rect(canvas, (int(cx - u * 0.35), Y(0.17)), (int(cx + u * 0.35), Y(0.42)), col)
        else:
            for s in (-1, 1):
                xs = int(round(cx + s * u * 0.3))
                _paint(canvas, lambda m: cv2.line(m, (xs, Y(0.14)), (xs, Y(0.35)), 255, 2), col)
    elif bag == "handbag":
        xb = X(u / 2 + arm_w)
        _rect(canvas, (xb - 3, Y(hip - 0.02)), (xb + 3, Y(hip + 0.1)), col)
    elif bag == "shoulder":
        p0, p1 = (X(-u * 0.4), Y(0.15)), (X(u * 0.45), Y(hip - 0.02))
        _paint(canvas, lambda m: cv2.line(m, p0, p1, 255, 2), col)
        _rect(canvas, (X(u * 0.35), Y(hip - 0.05)), (X(u * 0.6), Y(hip + 0.06)), col)


def _occlude(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A pole, or an object in front of the legs, in a random colour."""
    h, w = canvas.shape[:2]
    col = tuple(float(c) for c in rng.uniform(20, 230, 3))
    if rng.random() < 0.5:
        x = int(rng.uniform(0.1, 0.9) * w)
        _rect(canvas, (x, 0), (x + int(rng.integers(3, 8)), h), col)
    else:
        y = int(rng.uniform(0.7, 0.85) * h)
        x0 = int(rng.uniform(-0.3, 0.4) * w)
        _rect(canvas, (x0, y), (x0 + int(rng.uniform(0.5, 0.9) * w), h), col)


def _photometric(img: np.ndarray, style: Dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    grey = img.mean(axis=2, keepdims=True)
    img = grey + style["saturation"] * (img - grey)
    img = img * np.array(style["gains"], np.float32)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** style["gamma"]
    light = style["brightness"] + rng.normal(0, 5)
    img = (img - 128.0) * style["contrast"] + 128.0 + light
    # per-image shading: a random linear illumination ramp
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = 1.0 + rng.normal(0, 0.12) * (xx / w - 0.5) + rng.normal(0, 0.12) * (yy / h - 0.5)
    img = img * ramp[..., None]
    if style["blur"] > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), style["blur"])
    if style["resolution"] < 1.0:
        small = (
            max(int(round(w * style["resolution"])), 2),
            max(int(round(h * style["resolution"])), 2),
        )
        img = cv2.resize(
            cv2.resize(img, small, interpolation=cv2.INTER_AREA),
            (w, h),
            interpolation=cv2.INTER_LINEAR,
        )
    img = img + rng.normal(0, style["noise"], img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_image(
    ident: Optional[Dict[str, Any]],
    style: Dict[str, Any],
    rng: np.random.Generator,
    height: int,
    width: int,
    kind: str = "person",
) -> np.ndarray:
    """Render one ``height x width`` RGB uint8 image.

    Args:
        ident: appearance from :func:`sample_identity` (None for a background-only image).
        style: camera style (domain style plus camera perturbation).
        rng: per-image random generator (pose, background, noise).
        kind: ``"person"`` (normal detection), ``"distractor"`` (background with a tiny or
            off-centre person, Market pid 0) or ``"junk"`` (a zoomed crop with little person,
            Market pid -1).
    """
    ch, cw = 2 * height, 2 * width  # draw at twice the size, then area-downsample
    canvas = _background(ch, cw, style, rng)
    scale = style["person_scale"] * rng.uniform(0.92, 1.06)
    ph = ch * scale
    pose = dict(
        cx=cw / 2 + rng.uniform(-1, 1) * style["shift"] * cw,
        top=(ch - ph) / 2 + rng.normal(0, 0.015 * ch),
        height=ph,
        back=bool(rng.random() < style.get("back_prob", 0.5)),
        side_view=bool(rng.random() < style["side_prob"]),
        spread=float(rng.uniform(0, 1)),
        swing=float(rng.uniform(-2, 2)),
    )
    if kind == "person" and rng.random() < style["crop_prob"]:
        extra = rng.uniform(0.1, 0.3) * ph  # partial view: the person is cut at the bottom
        pose["height"] = ph + extra
    if kind == "distractor":
        pose["height"] = ph * rng.uniform(0.3, 0.5)
        pose["cx"] = cw * rng.choice([0.1, 0.9])
        pose["top"] = rng.uniform(0.2, 0.5) * ch
    if ident is not None:
        _draw_person(canvas, ident, pose)
    if kind == "person" and rng.random() < style["occlusion_prob"]:
        _occlude(canvas, rng)
    if kind == "junk":
        y0 = int(rng.uniform(0.6, 0.8) * ch)
        x0 = int(rng.uniform(0, 0.5) * cw)
        canvas = cv2.resize(canvas[y0:, x0:], (cw, ch), interpolation=cv2.INTER_LINEAR)
    img = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
    return _photometric(img, style, rng)
