"""Writing the synthetic person-search scenes in the CUHK-SYSU or PRW on-disk layout.

:func:`write_layout` writes the rendered images and the annotation files of one planned
dataset (the layouts are described in :mod:`reid_plugins.data.synthetic_scenes`): JPEG images
and MATLAB v5 files written with :func:`scipy.io.savemat` under a fixed header text, so the
same plan gives byte-identical files; the size and sha1 of every file are returned for the
manifest.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import scipy.io
from PIL import Image

__all__ = ["CUHK_GALLERY_SIZES", "write_layout"]

#: Candidate TestG<N> gallery sizes of the synthetic CUHK-SYSU layout.
CUHK_GALLERY_SIZES = (10, 20, 50, 100, 500, 1000, 2000, 4000)


# --------------------------------------------------------------------------------------- #
# Encoding: fixed-header .mat files, JPEG, manifest entries
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
    """Writes files under ``base`` and records ``{relative path: {"bytes", "sha1"}}``."""

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


# --------------------------------------------------------------------------------------- #
# Layouts
# --------------------------------------------------------------------------------------- #
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
        box = np.zeros((1, 0))  # an absent person: 1x0, as in the real CUHK-SYSU files
        if present:
            box = _xywh(next(q for q in images[j]["persons"] if q["id"] == i)["visible"])
        return {"imname": names[j], "idlocate": box, "ishard": 0.0}

    gal_fields, train, queries = ["imname", "idlocate", "ishard"], [], []
    for i, ident in enumerate(identities):
        idname = f"p{i + 1}"
        if ident["split"] == "test":
            if ident.get("queried", True):
                queries.append((i, idname))
            continue
        scene = _struct([entry(i, j) for j in ident["images"]], gal_fields)
        row = {"idname": idname, "nAppear": float(scene.size), "scene": scene}
        train.append(_struct([row], ["idname", "nAppear", "scene"]))
    proto = "annotation/test/train_test"
    w.write(f"{proto}/Train.mat", _savemat_bytes({"Train": _cell(train)}))
    test_idx = [im["index"] for im in images if im["split"] == "test"]
    sizes = p.get("gallery_sizes") or [n for n in CUHK_GALLERY_SIZES if n <= len(test_idx) - 1]
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
        if ident["split"] != "test" or not ident.get("queried", True):
            continue  # gallery-only test identities are labelled but never queried
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


def write_layout(
    folder: str,
    fmt: str,
    images: List[Dict[str, Any]],
    identities: List[Dict[str, Any]],
    params: Dict[str, Any],
    rng: np.random.Generator,
    render: Iterable[Dict[str, Any]],
) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """Write one planned dataset into ``folder`` in the layout ``fmt``.

    Args:
        folder: output folder (created as needed).
        fmt: ``"cuhk_sysu"`` or ``"prw"``.
        images, identities: the plan (images with split, camera and persons; identities with
            split and image indices, the first image being the query's).
        params: the generation parameters (``image_size``, ``num_cams``, ...).
        rng: random stream for names, raw ids and distractor order.
        render: ``{"index": image index, "pixels": uint8 (h, w, 3)}`` per image, consumed
            while writing.

    Returns:
        ``(counts, files)``: layout counts (``num_queries``; ``gallery_sizes`` for
        cuhk_sysu) and ``{relative path: {"bytes", "sha1"}}`` of every written file.
    """
    writer = _Writer(folder)
    write = _write_cuhk if fmt == "cuhk_sysu" else _write_prw
    return write(writer, images, identities, params, rng, render), writer.files
