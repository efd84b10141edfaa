"""Deterministic synthetic person-search scenes in the CUHK-SYSU or PRW layout.

:func:`generate_synthetic_scenes` draws street-like scenes (textured walls and floors,
clutter) seen by several cameras that differ in colour cast, illumination (gain, gamma),
resolution, blur and noise, with several persons per image at perspective-dependent scales,
overlapping each other and cut at the image border. Labelled identities have a fixed
appearance (skin, hair, clothing colours and pattern, trousers / shorts / skirt, build,
backpack / handbag / hat) drawn from front, back or side views; train / test identities are
disjoint. Unlabelled persons have one-off appearances. The structure the methods rely on, each
property with the real statistic behind it in :func:`_plan` / :func:`_place_group` /
:data:`GROUP_SIZE_PROBS`:

* labelled persons walk in groups of 1-4 that reappear together in other images and cameras
  (the context TDN's Ranking with Context Persons uses); a query's image holds its group;
* crowding (CUHK-SYSU 5.3 boxes per image, PRW 3.6), scale (0.15-0.85 of the image height,
  with perspective), occlusion (overlapping persons, more in crowded images; objects in front
  of :data:`~reid_plugins.data.synthetic_scene_render.OCCLUDER_PROB` of the persons);
* PRW: several frames per camera visit and labelled gallery persons who are never queried.

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
  per queried test identity and camera it appears in; ``num_gallery_only_ids`` more test
  identities are labelled but never queried). Raw ids are a random subset of 1..T+S;
  unlabelled persons have pid -2; persons cut at the left / top border keep their negative
  ``x`` / ``y`` (clipped by the parser), boxes are clipped at the right / bottom border.

Same arguments -> byte-identical files (per-image random streams, fixed .mat headers). A
``manifest.json`` (parameters, sha1 and size of every file) makes repeated calls free; the
data is built in a temporary folder and renamed into place.

This module plans the datasets (which identities appear in which images, where persons
stand) and manages the output folder; the pixels are drawn by
:mod:`~reid_plugins.data.synthetic_scene_render` and the files written by
:mod:`~reid_plugins.data.synthetic_scene_layouts`.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .synthetic_scene_layouts import CUHK_GALLERY_SIZES, write_layout
from .synthetic_scene_render import camera_style, draw_person, random_appearance, render_scene

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
_VERSION = 2
_MANIFEST = "manifest.json"


def synthetic_scenes_dir(root: str, fmt: str) -> str:
    """``<root>/synthetic_<fmt>``."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got '{fmt}'")
    return os.path.join(root, f"synthetic_{fmt}")


# --------------------------------------------------------------------------------------- #
# Planning: which identities appear where
# --------------------------------------------------------------------------------------- #
#: Group sizes 1..4 of the planned walking groups (probabilities per group). About 70 % of
#: pedestrians in city streets walk in groups, mostly pairs and triples (Moussaid et al.,
#: "The walking behaviour of pedestrian social groups", PLoS ONE 2010); with these weights
#: 72 % of the labelled persons walk with somebody.
GROUP_SIZE_PROBS = (0.5, 0.3, 0.14, 0.06)
#: Chance that a group member is in a group image after the first two (a member may have
#: walked ahead or be hidden); the first two images hold the whole group.
GROUP_PRESENCE = 0.85


def _overlap_ok(box, placed, limit: float) -> bool:
    area = (box[2] - box[0]) * (box[3] - box[1])
    for q in placed:
        iw = min(box[2], q[2]) - max(box[0], q[0])
        ih = min(box[3], q[3]) - max(box[1], q[1])
        qa = (q[2] - q[0]) * (q[3] - q[1])
        if iw > 0 and ih > 0 and iw * ih > limit * min(area, qa):
            return False
    return True


def _place_group(
    rng: np.random.Generator, placed: List[tuple], size: Tuple[int, int], n: int, limit: float
) -> Optional[List[tuple]]:
    """``n`` full person boxes (x1, y1, x2, y2 ints, may leave the image) standing side by side
    at one depth, each >= 55 % inside the image and covering at most ``limit`` of any placed
    box (``limit`` >= 1: no check); None if not found.

    Perspective: the person height grows with the foot row from 0.15 to 0.85 of the image
    height (CUHK-SYSU boxes range from ~50 to ~600 pixels in ~600 x 800 images), so far
    persons are small and near persons large (detector-relevant scale variety)."""
    h, w = size
    for _ in range(40):
        foot = rng.uniform(0.45, 1.0) * h if rng.random() > 0.1 else rng.uniform(1.0, 1.15) * h
        ph0 = h * (0.15 + 0.7 * (min(foot / h, 1.0) - 0.45) / 0.55)
        x, boxes = 0.0, []
        for _k in range(n):
            ph = ph0 * rng.uniform(0.92, 1.08)
            pw = ph * rng.uniform(0.34, 0.42)
            f = foot + rng.normal(0, 0.015 * h)
            boxes.append([x, f - ph, x + pw, f])
            x += pw * rng.uniform(0.75, 1.15)  # shoulder to shoulder, slight overlaps
        shift = rng.uniform(-0.05, 1.05) * w - x / 2
        boxes = [
            tuple(int(round(v)) for v in (b[0] + shift, b[1], b[2] + shift, b[3])) for b in boxes
        ]
        ok = True
        for box in boxes:
            vis = (min(box[2], w) - max(box[0], 0), min(box[3], h) - max(box[1], 0))
            bw, bh = box[2] - box[0], box[3] - box[1]
            if vis[0] < max(4, 0.55 * bw) or vis[1] < max(8, 0.55 * bh):
                ok = False
                break
            if limit < 1 and not _overlap_ok(box, placed, limit):
                ok = False
                break
        if ok:
            return boxes
    return None


def _groups(rng: np.random.Generator, members: List[int]) -> List[List[int]]:
    """Split identity indices into walking groups of 1-4 (:data:`GROUP_SIZE_PROBS`)."""
    out, k = [], 0
    while k < len(members):
        n = int(rng.choice(len(GROUP_SIZE_PROBS), p=GROUP_SIZE_PROBS)) + 1
        out.append(members[k : k + n])
        k += n
    return out


def _plan(p: Dict[str, Any], rng: np.random.Generator):
    """Images (split, camera, persons with full boxes) and identities (split, appearance,
    image indices; the first image is the query's, ``queried``: may be a query).

    Labelled identities walk in groups (:func:`_groups`); a group appears together in
    ``appearances`` visits spread over the cameras, each visit ``frames_per_visit``
    consecutive images of one camera (PRW is video: 15,575 train boxes of 482 ids = 32 boxes
    per id; CUHK-SYSU photos: 15,080 boxes of 5,532 ids = 2.7). Test identities beyond
    ``num_test_ids`` (``num_gallery_only_ids``) are labelled in the gallery but never queried
    (PRW's test frames hold such persons). Every image also holds ``unlabeled_per_image``
    one-off persons (CUHK-SYSU: 96,143 boxes in 18,184 images, 5.3 per image, most of them
    unlabelled; PRW: 43,110 in 11,816, 3.6 per image); crowded images allow more overlap.
    """
    size, cams = tuple(p["image_size"]), p["num_cams"]
    images: List[Dict[str, Any]] = []
    for split in ("train", "test"):
        n = p[f"num_{split}_images"]
        for cam in rng.permutation(np.arange(n) % cams):
            images.append({"index": len(images), "split": split, "cam": int(cam), "ids": []})
    identities: List[Dict[str, Any]] = []
    cap = p["max_labeled_per_image"]
    for code, split in enumerate(("train", "test")):
        members = [im for im in images if im["split"] == split]
        count = p[f"num_{split}_ids"] + (p["num_gallery_only_ids"] if split == "test" else 0)
        first = len(identities)
        for k in range(count):
            identities.append(
                {
                    "split": split,
                    "app": random_appearance(np.random.default_rng(p["key"] + [3, code, k])),
                    "images": [],
                    "image_set": set(),
                    "queried": split == "test" and k < p["num_test_ids"],
                    "group": None,
                }
            )
        for g, group in enumerate(_groups(rng, list(range(first, first + count)))):
            for i in group:
                identities[i]["group"] = (code, g)
            order = rng.permutation(cams)
            visits = int(rng.integers(p["appearances"][0], p["appearances"][1] + 1))
            t = 0
            for v in range(visits):
                nframes = int(rng.integers(p["frames_per_visit"][0], p["frames_per_visit"][1] + 1))
                for _f in range(nframes):
                    present = [i for i in group if t < 2 or rng.random() < GROUP_PRESENCE]
                    present = present or [group[int(rng.integers(len(group)))]]
                    free = [
                        im
                        for im in members
                        if not any(im["index"] in identities[i]["image_set"] for i in present)
                        and len(im["ids"]) + len(present) <= max(cap, len(group))
                    ]
                    pool = [im for im in free if im["cam"] == order[v % cams]] or free
                    if not pool:
                        raise ValueError(
                            f"Too few {split} images ({len(members)}) for {count} identities x "
                            f"{p['appearances']} visits with at most {cap} labelled persons "
                            "per image"
                        )
                    loads = np.array([len(im["ids"]) for im in pool])
                    best = [im for im, load in zip(pool, loads) if load == loads.min()]
                    im = best[int(rng.integers(len(best)))]
                    im.setdefault("groups", []).append(present)
                    for i in present:
                        im["ids"].append(i)
                        identities[i]["images"].append(im["index"])
                        identities[i]["image_set"].add(im["index"])
                    t += 1
    lo, hi = p["unlabeled_per_image"]
    for im in images:
        persons, boxes = [], []
        for present in im.get("groups", []):
            found = _place_group(rng, boxes, size, len(present), 0.45)
            found = found or _place_group(rng, boxes, size, len(present), 2.0)
            if found is None:
                raise RuntimeError(f"Could not place a group of {len(present)} in a {size} image")
            for i, box in zip(present, found):
                boxes.append(box)
                persons.append({"id": i, "app": identities[i]["app"], "full": box})
        crowd = int(rng.integers(lo, hi + 1))
        limit = 0.6 if crowd > (lo + hi) / 2 else 0.45  # crowded scenes: heavier occlusion
        left = crowd
        while left > 0:
            n = min(int(rng.choice(len(GROUP_SIZE_PROBS), p=GROUP_SIZE_PROBS)) + 1, left)
            left -= n
            found = _place_group(rng, boxes, size, n, limit)
            for box in found or []:
                boxes.append(box)
                persons.append({"id": None, "app": random_appearance(rng), "full": box})
        im["persons"] = [persons[j] for j in rng.permutation(len(persons))]
        for q in im["persons"]:
            x1, y1, x2, y2 = q["full"]
            q["visible"] = (max(x1, 0), max(y1, 0), min(x2, size[1]), min(y2, size[0]))
        im.pop("groups", None)
    for ident in identities:
        ident.pop("image_set")
    return images, identities


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
    num_train_images: int = 400,
    num_test_images: int = 600,
    num_train_ids: int = 200,
    num_test_ids: Optional[int] = None,
    num_cams: int = 6,
    image_size: Tuple[int, int] = (240, 320),
    appearances: Tuple[int, int] = (2, 4),
    max_labeled_per_image: int = 5,
    unlabeled_per_image: Optional[Tuple[int, int]] = None,
    num_gallery_only_ids: Optional[int] = None,
    frames_per_visit: Optional[Tuple[int, int]] = None,
    gallery_sizes: Optional[Sequence[int]] = None,
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
        num_train_ids, num_test_ids: labelled identities per split (disjoint); every test
            identity is queried (cuhk_sysu: once; prw: once per camera it appears in).
            ``num_test_ids`` None: 400 for cuhk_sysu, 250 for prw.
        num_cams: cameras (each a colour cast / illumination / resolution / blur / noise /
            background style); an identity's appearances are spread over different cameras.
        image_size: ``(height, width)`` of every image.
        appearances: ``(min, max)`` visits of each walking group (min >= 2); a visit is
            ``frames_per_visit`` images of one camera.
        max_labeled_per_image: at most this many labelled persons per image (a larger group
            still fits in one image).
        unlabeled_per_image: ``(min, max)`` unlabelled persons per image (fewer when no room;
            more than the midpoint: a crowded image, where persons may overlap more). None:
            (1, 6) for cuhk_sysu, (0, 3) for prw (with the labelled persons about 5.2 and 3.7
            boxes per image, as in the real datasets).
        num_gallery_only_ids: extra labelled test identities that are never queried (PRW's
            gallery holds such persons). None: 0 for cuhk_sysu, ``num_test_ids // 4`` for prw.
        frames_per_visit: ``(min, max)`` consecutive images per camera visit. None: (1, 1)
            for cuhk_sysu (photos), (1, 2) for prw (video frames).
        gallery_sizes: cuhk_sysu only: write ``TestG<N>.mat`` for these N (each
            ``<= num_test_images - 1``). None: every N of :data:`CUHK_GALLERY_SIZES` that
            fits (a large test set then gets large files: TestG500 alone holds 500 gallery
            entries per query).
        overwrite: replace existing data generated with other arguments.
        progress: show a tqdm bar.

    Raises:
        ValueError: bad arguments, or the folder holds data generated with other arguments
            and ``overwrite`` is False.
        FileExistsError: the folder exists but was not written by this function.
    """
    out = synthetic_scenes_dir(root, fmt)
    if num_test_ids is None:
        num_test_ids = 250 if fmt == "prw" else 400
    if unlabeled_per_image is None:  # CUHK-SYSU 5.3 boxes per image, PRW 3.6 (see _plan)
        unlabeled_per_image = (0, 3) if fmt == "prw" else (1, 6)
    if num_gallery_only_ids is None:
        num_gallery_only_ids = num_test_ids // 4 if fmt == "prw" else 0
    if frames_per_visit is None:
        frames_per_visit = (1, 2) if fmt == "prw" else (1, 1)
    params = {
        "fmt": fmt, "seed": int(seed), "num_train_images": int(num_train_images),
        "num_test_images": int(num_test_images), "num_train_ids": int(num_train_ids),
        "num_test_ids": int(num_test_ids), "num_cams": int(num_cams),
        "image_size": [int(v) for v in image_size], "appearances": [int(v) for v in appearances],
        "max_labeled_per_image": int(max_labeled_per_image),
        "unlabeled_per_image": [int(v) for v in unlabeled_per_image],
        "num_gallery_only_ids": int(num_gallery_only_ids),
        "frames_per_visit": [int(v) for v in frames_per_visit],
    }  # fmt: skip
    if gallery_sizes is not None:  # only when given: data made without it stays reusable
        sizes = sorted({int(n) for n in gallery_sizes})
        if fmt != "cuhk_sysu" or not sizes or sizes[0] < 1 or sizes[-1] > num_test_images - 1:
            raise ValueError(
                f"gallery_sizes must be cuhk_sysu gallery sizes in 1..num_test_images - 1 "
                f"({num_test_images - 1}), got {list(gallery_sizes)} for fmt='{fmt}'"
            )
        params["gallery_sizes"] = sizes
    if frames_per_visit[0] < 1 or frames_per_visit[1] < frames_per_visit[0]:
        raise ValueError(
            f"frames_per_visit must be (min, max) with 1 <= min <= max, got {frames_per_visit}"
        )
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
    styles = [camera_style(np.random.default_rng(key + [2, c])) for c in range(cams)]
    size = tuple(params["image_size"])
    render = (
        {"index": im["index"], "pixels": render_scene(im, styles[im["cam"]], size, key)}
        for im in tqdm(images, desc=f"synthetic_{fmt}", disable=not progress, leave=False)
    )
    extra, files = write_layout(folder, fmt, images, identities, params, rng, render)
    counts = {
        "num_images": len(images),
        "num_boxes": sum(len(im["persons"]) for im in images),
        "num_labeled_boxes": sum(q["id"] is not None for im in images for q in im["persons"]),
        **extra,
    }
    return counts, files


def ensure_synthetic_scenes(root: str, fmt: str) -> str:
    """``<root>/synthetic_<fmt>`` if it holds generated data (any arguments), else generate it
    with the defaults of :func:`generate_synthetic_scenes`. Used by the registered
    ``synthetic_cuhk_sysu_*`` / ``synthetic_prw_*`` datasets."""
    out = synthetic_scenes_dir(root, fmt)
    if _read_manifest(out) is not None:
        return out
    return generate_synthetic_scenes(root, fmt=fmt)
