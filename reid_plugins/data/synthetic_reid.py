"""Deterministic synthetic multi-domain ReID benchmark in the Market-1501 layout.

:func:`generate_synthetic_reid` writes, for every domain,
``<root>/synthetic_reid/<domain>/{bounding_box_train,bounding_box_test,query}`` with Market
file names ``PPPP_cCs1_FFFFFF_00.jpg`` so the real Market loader reads them (registered as
``synthetic_reid_<domain>_train`` / ``_test``).

* Identities are drawn persons: head (skin, hair, optional hat), torso (clothing colour and
  pattern: plain / horizontal stripes / vertical stripes / checks; long or short sleeves),
  legs (trousers or shorts, plain or striped), shoes, body shape (width, height, leg length),
  bag (none / backpack / handbag / shoulder bag). Each image varies the pose (front or back
  view = mirrored with the bag on the other side, leg spread, arm swing, position, scale).
* Domains differ the way the four datasets of the M3L / GMN leave-one-out protocol differ
  (the real statistic is written next to each preset value in
  :data:`~reid_plugins.data.synthetic_reid_render.DOMAIN_PRESETS`):

  - camera colour response and illumination: colour cast, saturation, brightness, contrast,
    gamma per domain, and a per-camera spread (``cam_jitter``; large for the MSMT17-like
    synD, whose 15 cameras were filmed in the morning, at noon and in the afternoon);
  - resolution, blur and sensor noise (CUHK03's detected crops are small and blurry:
    synC down-samples to 0.4x);
  - background texture and viewpoint (person scale, horizontal shift, partial crops, side /
    back views, occluders: DukeMTMC-reID has many occluded crops);
  - clothing (season / place): Market-1501 was filmed in summer (bright, short sleeves),
    DukeMTMC-reID and MSMT17 in winter (dark coats);
  - number of cameras (6 / 8 / 2 / 15 capped at 9), identities (751 / 702 / 767 / 1,041
    train ids relative to Market-1501's) and images per identity (17.2 / 23.5 / 9.6 / 31.3,
    halved here), with each identity seen by a random subset of >= 2 cameras.

  Other domain names get a style drawn from the seed.
* Test split (dataset-like layout): one query per test identity and camera it appears in
  (the Market-1501 protocol: 3,368 queries for 750 test ids), so with the default
  :data:`BASE_TEST_IDS` every domain has 755-1,214 queries: a bootstrap standard error of mAP
  over queries of about one point at 40-65 mAP (``test_ids_scale`` multiplies every domain's
  test ids; the built-in benchmark doubles them). The rest is the gallery, plus
  ``num_distractors`` pid-0 images (background with an off-centre or tiny person) and
  ``num_junk`` pid -1 images (crops with little person). Explicit ``num_cams`` /
  ``images_per_id_per_cam`` give the older uniform layout (every identity in every camera,
  queries in all cameras but one), used by the small unit tests.
* Identities are independent draws per (domain, pid), so they are disjoint across domains and
  across train/test (test pids follow the train pids).

Same seed and parameters -> byte-identical files. A ``manifest.json`` (parameters, seed,
style, statistics) is written last per domain; calling again with the same parameters
returns at once.

Styles, identities and the drawing live in :mod:`reid_plugins.data.synthetic_reid_render`
(re-exported here); this module plans the files of each domain and writes the Market layout,
the manifest and the cache check.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import synthetic_reid_render
from .synthetic_reid_render import (  # noqa: F401  (DOMAIN_PRESETS re-exported)
    DOMAIN_PRESETS,
    _camera_style,
    _domain_key,
    _rng,
    domain_style,
    render_image,
    sample_identity,
)

__all__ = [
    "DEFAULT_DOMAINS",
    "DOMAIN_PRESETS",
    "GENERATOR_VERSION",
    "domain_style",
    "sample_identity",
    "render_image",
    "generate_synthetic_reid",
]

GENERATOR_VERSION = 3
#: Identities of a domain with ``ids_factor`` 1 (train / test) in the dataset-like layout.
BASE_TRAIN_IDS = 100
BASE_TEST_IDS = 200
DEFAULT_DOMAINS = ("synA", "synB", "synC", "synD")
SPLIT_DIRS = ("bounding_box_train", "bounding_box_test", "query")
BACKGROUNDS = synthetic_reid_render.BACKGROUNDS  # background kinds of the domain styles


# ----------------------------------------------------------------------------- generation


def _opt_int(v: Optional[int]) -> Optional[int]:
    return None if v is None else int(v)


def _write_jpg(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"Could not write '{path}'")


def _layout(domain: str, params: Dict[str, Any]) -> Dict[str, Any]:
    """Cameras, identity counts and images per identity of ``domain``.

    Explicit parameters (``num_cams``, ``num_train_ids``, ``num_test_ids``,
    ``images_per_id_per_cam``) give the uniform layout: every identity in every camera with
    that many images, queries in every camera but one. ``None`` takes the domain's dataset-like
    values from its style (``num_cams``; ``ids_factor`` / ``test_ids_factor`` x
    :data:`BASE_TRAIN_IDS` / :data:`BASE_TEST_IDS`, test ids x ``test_ids_scale``;
    ``images_per_id``), with identities seen
    by a random subset of >= 2 cameras and one query per identity and camera (the Market-1501
    protocol: 3,368 queries = one per identity and camera of the 750 test ids).
    """
    style = domain_style(domain, params["seed"])
    uniform = params["images_per_id_per_cam"] is not None
    ncam = params["num_cams"] or int(style.get("num_cams", 3))
    ntr = params["num_train_ids"] or max(2, round(BASE_TRAIN_IDS * style.get("ids_factor", 1.0)))
    scale = params.get("test_ids_scale", 1.0)  # stored only when not 1 (older manifests)
    nte = params["num_test_ids"] or max(
        2,
        round(
            BASE_TEST_IDS * style.get("ids_factor", 1.0) * style.get("test_ids_factor", 1.0) * scale
        ),
    )
    return dict(
        uniform=uniform,
        num_cams=ncam,
        num_train_ids=ntr,
        num_test_ids=nte,
        images_per_id_per_cam=params["images_per_id_per_cam"],
        images_per_id=float(style.get("images_per_id", 2.0 * ncam)),
    )


def _id_cameras(r: np.random.Generator, lay: Dict[str, Any]) -> List[Tuple[int, int]]:
    """``[(camera, number of images)]`` of one identity (cameras 1-based)."""
    ncam = lay["num_cams"]
    if lay["uniform"]:
        return [(c, lay["images_per_id_per_cam"]) for c in range(1, ncam + 1)]
    total = max(2, int(r.poisson(lay["images_per_id"] - 2)) + 2)  # >= 2 images
    k = int(r.integers(2, min(ncam, total) + 1))  # seen by 2..k cameras
    cams = sorted(int(c) + 1 for c in r.choice(ncam, size=k, replace=False))
    counts = np.ones(k, dtype=int) + r.multinomial(total - k, np.full(k, 1.0 / k))
    if lay["test"]:  # every camera needs a gallery image besides its query (same-cam drop)
        counts = np.maximum(counts, 2)
    return list(zip(cams, (int(c) for c in counts)))


def _plan_domain(domain: str, params: Dict[str, Any]) -> List[Tuple[str, str, Dict[str, Any]]]:
    """Ordered list of (folder, file name, render job) of one domain (no pixels yet)."""
    seed, dkey = params["seed"], _domain_key(domain)
    lay = _layout(domain, params)
    clothing = domain_style(domain, seed).get("clothing")
    ntr, nte, ncam = lay["num_train_ids"], lay["num_test_ids"], lay["num_cams"]
    frames = {c: 0 for c in range(1, ncam + 1)}
    jobs = []

    def name(pid: int, cam: int, r: np.random.Generator) -> str:
        frames[cam] += int(r.integers(1, 60))
        return (
            f"{pid:04d}_c{cam}s1_{frames[cam]:06d}_00.jpg"
            if pid >= 0
            else f"-1_c{cam}s1_{frames[cam]:06d}_00.jpg"
        )

    for pid in range(1, ntr + nte + 1):
        is_test = pid > ntr
        r = _rng(seed, dkey, 1, pid)
        ident = sample_identity(r, clothing)
        no_query_cam = int(r.integers(1, ncam + 1))
        for cam, num in _id_cameras(r, dict(lay, test=is_test)):
            for k in range(num):
                folder = "bounding_box_train"
                if is_test:
                    query = k == 0 and (not lay["uniform"] or cam != no_query_cam)
                    folder = "query" if query else "bounding_box_test"
                job = dict(ident=ident, cam=cam, key=(seed, dkey, 2, pid, cam, k), kind="person")
                jobs.append((folder, name(pid, cam, r), job))
    for i in range(params["num_distractors"]):
        r = _rng(seed, dkey, 3, i)
        cam = int(r.integers(1, ncam + 1))
        ident = sample_identity(r, clothing) if r.random() < 0.7 else None
        job = dict(ident=ident, cam=cam, key=(seed, dkey, 4, i), kind="distractor")
        jobs.append(("bounding_box_test", name(0, cam, r), job))
    for i in range(params["num_junk"]):
        r = _rng(seed, dkey, 5, i)
        cam = int(r.integers(1, ncam + 1))
        job = dict(ident=sample_identity(r, clothing), cam=cam, key=(seed, dkey, 6, i), kind="junk")
        jobs.append(("bounding_box_test", name(-1, cam, r), job))
    return jobs


def _statistics(jobs) -> Dict[str, Dict[str, int]]:
    def count(sel):
        pids = [int(n.split("_")[0]) for n in sel]
        cams = {n.split("_")[1][:2] for n in sel}
        return dict(ids=len({p for p in pids if p > 0}), images=len(sel), cameras=len(cams))

    by = {f: [n for ff, n, _ in jobs if ff == f] for f in SPLIT_DIRS}
    gallery = [n for n in by["bounding_box_test"] if not n.startswith("-1_")]
    g = count(gallery)
    g["distractors"] = sum(n.startswith("0000_") for n in gallery)
    return {
        "train": count(by["bounding_box_train"]),
        "query": count(by["query"]),
        "gallery": g,
        "junk": dict(images=sum(n.startswith("-1_") for n in by["bounding_box_test"])),
    }


def _count_files(domain_dir: str) -> int:
    total = 0
    for f in SPLIT_DIRS:
        d = os.path.join(domain_dir, f)
        if os.path.isdir(d):
            total += sum(n.endswith(".jpg") for n in os.listdir(d))
    return total


def generate_synthetic_reid(
    root: str,
    *,
    seed: int = 0,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    num_train_ids: Optional[int] = None,
    num_test_ids: Optional[int] = None,
    images_per_id_per_cam: Optional[int] = None,
    num_cams: Optional[int] = None,
    height: int = 64,
    width: int = 32,
    num_distractors: int = 50,
    num_junk: int = 20,
    test_ids_scale: float = 1.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, str]:
    """Generate (or reuse) the synthetic ReID domains under ``<root>/synthetic_reid/``.

    Args:
        root: datasets root (e.g. ``$REID_DATASETS``); domains go to
            ``<root>/synthetic_reid/<domain>/``.
        seed: random seed; same seed and parameters -> byte-identical files.
        domains: domain names; ``synA``..``synD`` use fixed style presets, other names a
            style drawn from (seed, name).
        num_train_ids, num_test_ids: identities per domain in each split (train pids
            ``1..num_train_ids``, test pids follow; at most 9999 in all). None: the domain's
            dataset-like count (:data:`BASE_TRAIN_IDS` / :data:`BASE_TEST_IDS` x the style's
            ``ids_factor`` / ``test_ids_factor``).
        images_per_id_per_cam: images of each identity in each camera (uniform layout: every
            identity in every camera, queries in all cameras but one). None: the dataset-like
            layout (a Poisson number of images around the style's ``images_per_id``, spread
            over a random subset of >= 2 cameras, one query per identity and camera).
        num_cams: cameras per domain (2..9, Market names hold one digit). None: the style's
            ``num_cams``.
        height, width: image size in pixels.
        num_distractors, num_junk: extra gallery images with pid 0 / pid -1 per domain.
        test_ids_scale: multiplies every domain's dataset-like number of test identities
            (only with ``num_test_ids`` None), keeping the domains' ratios and layout: a larger
            test split for a smaller standard error of mAP. The train split, and the first
            test identities' images, are unchanged.
        overwrite: regenerate even if a matching manifest exists, and replace a domain whose
            manifest holds other parameters (otherwise that is an error).
        progress: show a tqdm progress bar.

    Returns:
        ``{domain: absolute path of the domain folder}``.

    Raises:
        ValueError: invalid parameters, or an existing domain folder was generated with other
            parameters and ``overwrite`` is False (the message names the manifest and the
            differing keys).
    """
    if (num_train_ids is not None and num_train_ids < 1) or (
        num_test_ids is not None and num_test_ids < 1
    ):
        raise ValueError("num_train_ids and num_test_ids must be >= 1")
    if (num_train_ids or 0) + (num_test_ids or 0) > 9999:
        raise ValueError("num_train_ids + num_test_ids must be <= 9999 (Market names: 4 digits)")
    if num_cams is not None and not 2 <= num_cams <= 9:
        raise ValueError(f"num_cams must be in 2..9 (one digit in Market names), got {num_cams}")
    if (images_per_id_per_cam is not None and images_per_id_per_cam < 1) or (
        height < 16 or width < 8
    ):
        raise ValueError("images_per_id_per_cam >= 1, height >= 16 and width >= 8 are required")
    if not test_ids_scale > 0 or (num_test_ids is not None and test_ids_scale != 1.0):
        raise ValueError(
            f"test_ids_scale must be > 0 and only scales the dataset-like test split (with "
            f"num_test_ids None), got test_ids_scale={test_ids_scale}, num_test_ids={num_test_ids}"
        )
    if len(set(domains)) != len(domains) or not domains:
        raise ValueError(f"domains must be distinct non-empty names, got {list(domains)}")
    from tqdm import tqdm

    base = os.path.join(root, "synthetic_reid")
    out: Dict[str, str] = {}
    todo: List[Tuple[str, Dict[str, Any], list]] = []
    for domain in domains:
        params = dict(
            version=GENERATOR_VERSION,
            seed=int(seed),
            domain=domain,
            num_train_ids=_opt_int(num_train_ids),
            num_test_ids=_opt_int(num_test_ids),
            images_per_id_per_cam=_opt_int(images_per_id_per_cam),
            num_cams=_opt_int(num_cams),
            height=int(height),
            width=int(width),
            num_distractors=int(num_distractors),
            num_junk=int(num_junk),
        )
        if test_ids_scale != 1.0:  # absent at 1: manifests written before it stay valid
            params["test_ids_scale"] = float(test_ids_scale)
        ddir = os.path.abspath(os.path.join(base, domain))
        out[domain] = ddir
        manifest_path = os.path.join(ddir, "manifest.json")
        if os.path.isfile(manifest_path) and not overwrite:
            with open(manifest_path) as fh:
                manifest = json.load(fh)
            old = manifest.get("params", {})
            if old != params:
                diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
                raise ValueError(
                    f"'{manifest_path}' was generated with other parameters (differing: "
                    + ", ".join(f"{k}: {old.get(k)!r} -> {params.get(k)!r}" for k in diff)
                    + "). Pass overwrite=True (--overwrite) to regenerate, or another root."
                )
            if _count_files(ddir) == manifest.get("num_files"):
                continue  # cached
        todo.append((domain, params, _plan_domain(domain, params)))
    total = sum(len(j) for _, _, j in todo)
    with tqdm(
        total=total, desc="synthetic ReID", unit="img", disable=not progress or total == 0
    ) as bar:
        for domain, params, jobs in todo:
            ddir = out[domain]
            if os.path.isfile(os.path.join(ddir, "manifest.json")):
                os.remove(os.path.join(ddir, "manifest.json"))
            for f in SPLIT_DIRS:  # only the folders this generator owns
                shutil.rmtree(os.path.join(ddir, f), ignore_errors=True)
                os.makedirs(os.path.join(ddir, f))
            style = domain_style(domain, seed)
            ncam = _layout(domain, params)["num_cams"]
            cams = {c: _camera_style(style, seed, domain, c) for c in range(1, ncam + 1)}
            for folder, fname, job in jobs:
                img = render_image(
                    job["ident"], cams[job["cam"]], _rng(*job["key"]), height, width, job["kind"]
                )
                _write_jpg(os.path.join(ddir, folder, fname), img)
                bar.update(1)
            manifest = dict(
                params=params,
                style=style,
                statistics=_statistics(jobs),
                num_files=len(jobs),
                layout="Market-1501 (bounding_box_train, bounding_box_test, query)",
            )
            with open(os.path.join(ddir, "manifest.json"), "w") as fh:
                json.dump(manifest, fh, indent=1, sort_keys=True)
    return out
