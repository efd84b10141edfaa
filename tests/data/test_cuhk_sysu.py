"""CUHK-SYSU parsers on tiny .mat fixtures written in the real nested layouts."""

import json
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog
from reid_plugins.data.datasets.cuhk_sysu import (
    UNLABELED_PID,
    _read_images_mat,
    cuhk_sysu_gallery_sizes,
    load_cuhk_sysu_gallery,
    load_cuhk_sysu_protocol,
    load_cuhk_sysu_query,
    load_cuhk_sysu_train,
    protocol_cache_path,
    scene_statistics,
)

# image -> (width, height, boxes (x, y, w, h)); s1-s3 train, s4-s7 pool
IMAGES = {
    "s1.jpg": (90, 70, [[10, 20, 30, 40], [50, 10, 20, 40], [5, 5, 0, 30]]),
    "s2.jpg": (96, 72, [[12, 15, 30, 40], [60, 20, 25, 45]]),
    "s3.jpg": (80, 64, [[40, 10, 20, 40], [0, 0, 10, -5]]),
    "s4.jpg": (88, 66, [[10, 10, 30, 50], [50, 20, 20, 40]]),
    "s5.jpg": (92, 68, [[20, 10, 30, 50], [60, 5, 20, 40]]),
    "s6.jpg": (84, 60, [[5, 5, 20, 40]]),
    "s7.jpg": (86, 62, [[30, 20, 20, 40]]),
}
POOL = ["s4.jpg", "s5.jpg", "s6.jpg", "s7.jpg"]
TRAIN = [("p1", [("s1.jpg", [10, 20, 30, 40]), ("s2.jpg", [12, 15, 30, 40])]),
         ("p3", [("s2.jpg", [60, 20, 25, 45]), ("s3.jpg", [40, 10, 20, 40])])]  # fmt: skip
# query idname, image, box, gallery [(image, box or None (empty) or "zeros")]
TEST = [
    ("p7", "s4.jpg", [10, 10, 30, 50], [("s5.jpg", [20, 10, 30, 50]), ("s6.jpg", None),
                                         ("s7.jpg", "zeros")]),
    ("p9", "s5.jpg", [60, 5, 20, 40], [("s6.jpg", [5, 5, 20, 40]), ("s4.jpg", None),
                                        ("s7.jpg", None)]),
]  # fmt: skip


def _struct(rows, fields, column=False):
    shape = (len(rows), 1) if column else (1, len(rows))
    arr = np.zeros(shape, dtype=[(f, object) for f in fields])
    for i, r in enumerate(rows):
        for f in fields:
            arr[f].flat[i] = r[f]
    return arr


def _cell(values, column=True):
    arr = np.empty((len(values), 1) if column else (1, len(values)), dtype=object)
    for i, v in enumerate(values):
        arr.flat[i] = v
    return arr


def _box(b, empty=(1, 0)):
    if b is None:
        return np.zeros(empty)  # the real files: 1x0
    if b == "zeros":
        return np.zeros((1, 4))
    return np.array([b], dtype=np.float64)


def write_cuhk(root, variant="real", testg=(3,), empty=(1, 0)):
    """The real layout; ``variant="alt"`` writes the same content with other (squeezed /
    transposed) shapes: numeric n x 4 ``box``, Nx1 ``Img``, 1xN cells. ``empty``: shape of
    the empty ``idlocate`` arrays (1x0 in the real files)."""
    alt = variant == "alt"
    os.makedirs(os.path.join(root, "Image", "SSM"))
    os.makedirs(os.path.join(root, "annotation", "test", "train_test"))
    for name, (w, h, _) in IMAGES.items():
        Image.new("RGB", (w, h), (90, 120, 150)).save(os.path.join(root, "Image", "SSM", name))
    rows = []
    for name, (_, _, boxes) in IMAGES.items():
        box = np.array(boxes, dtype=np.float64) if alt else _struct(
            [{"idlocate": _box(b)} for b in boxes], ["idlocate"])  # fmt: skip
        rows.append({"imname": name, "nAppear": float(len(boxes)), "box": box})
    anno = os.path.join(root, "annotation")
    scipy.io.savemat(os.path.join(anno, "Images.mat"),
                     {"Img": _struct(rows, ["imname", "nAppear", "box"], column=alt)})  # fmt: skip
    scipy.io.savemat(os.path.join(anno, "pool.mat"), {"pool": _cell(POOL, column=not alt)})
    train = []
    for idname, scenes in TRAIN:
        sc = [{"imname": n, "idlocate": _box(b), "ishard": 0.0} for n, b in scenes]
        train.append(_struct([{"idname": idname, "nAppear": float(len(sc)),
                               "scene": _struct(sc, ["imname", "idlocate", "ishard"])}],
                             ["idname", "nAppear", "scene"]))  # fmt: skip
    proto = os.path.join(anno, "test", "train_test")
    scipy.io.savemat(os.path.join(proto, "Train.mat"), {"Train": _cell(train, column=not alt)})
    for n in testg:
        rows = []
        for idname, qname, qbox, gallery in TEST:
            q = {"imname": qname, "idlocate": _box(qbox), "ishard": 0.0, "idname": idname}
            g = [{"imname": gn, "idlocate": _box(gb, empty), "ishard": 0.0} for gn, gb in gallery]
            rows.append({"Query": _struct([q], ["imname", "idlocate", "ishard", "idname"]),
                         "Gallery": _struct(g, ["imname", "idlocate", "ishard"])})  # fmt: skip
        scipy.io.savemat(os.path.join(proto, f"TestG{n}.mat"),
                         {f"TestG{n}": _struct(rows, ["Query", "Gallery"])})  # fmt: skip
    return root


@pytest.fixture
def cuhk(tmp_path):
    return write_cuhk(str(tmp_path / "cuhk_sysu"))


def _by_id(records):
    return {r["image_id"]: r for r in records}


def test_train_split(cuhk):
    recs = load_cuhk_sysu_train(cuhk)
    assert [r["image_id"] for r in recs] == ["s1.jpg", "s2.jpg", "s3.jpg"]
    r = _by_id(recs)
    # w = 0 box of s1 and h < 0 box of s3 skipped; xywh -> xyxy floats
    np.testing.assert_array_equal(r["s1.jpg"]["boxes"], [[10, 20, 40, 60], [50, 10, 70, 50]])
    assert r["s1.jpg"]["boxes"].dtype == np.float32 and r["s1.jpg"]["pids"].dtype == np.int64
    assert r["s1.jpg"]["pids"].tolist() == [0, UNLABELED_PID]  # p1 -> 0, background -> -1
    assert r["s2.jpg"]["pids"].tolist() == [0, 1]  # p3 -> 1
    assert r["s3.jpg"]["pids"].tolist() == [1] and r["s3.jpg"]["boxes"].shape == (1, 4)
    assert (r["s2.jpg"]["height"], r["s2.jpg"]["width"]) == (72, 96)
    assert r["s1.jpg"]["camid"] == -1 and r["s1.jpg"]["dataset"] == "cuhk_sysu_train"
    assert r["s1.jpg"]["file_name"] == os.path.join(cuhk, "Image", "SSM", "s1.jpg")
    assert scene_statistics(recs) == dict(
        num_images=3, num_boxes=5, num_labeled_boxes=4, num_pids=2, num_cams=0
    )


def test_gallery_and_query_splits(cuhk):
    gal = _by_id(load_cuhk_sysu_gallery(cuhk))
    assert list(gal) == POOL
    assert gal["s4.jpg"]["pids"].tolist() == [7, UNLABELED_PID]  # idname "p7" -> 7
    assert gal["s5.jpg"]["pids"].tolist() == [7, 9]
    assert gal["s6.jpg"]["pids"].tolist() == [9]
    assert gal["s7.jpg"]["pids"].tolist() == [UNLABELED_PID]  # "zeros" idlocate = absent
    queries = load_cuhk_sysu_query(cuhk)
    assert [q["image_id"] for q in queries] == ["s4.jpg", "s5.jpg"]
    np.testing.assert_array_equal(queries[0]["query_box"], [10, 10, 40, 60])
    np.testing.assert_array_equal(queries[1]["query_box"], [60, 5, 80, 45])
    assert [q["query_pid"] for q in queries] == [7, 9]
    assert queries[1]["pids"].tolist() == [7, 9]  # whole scene kept (context persons)
    assert scene_statistics(queries)["num_queries"] == 2


def test_protocol_lists_and_full_set(cuhk):
    assert cuhk_sysu_gallery_sizes(cuhk) == [3]
    p = load_cuhk_sysu_protocol(cuhk, 3)
    assert [q["query_image_id"] for q in p] == ["s4.jpg", "s5.jpg"]
    assert list(p[0]["gallery_image_ids"]) == ["s5.jpg", "s6.jpg", "s7.jpg"]
    assert list(p[0]["gallery_gt"]) == ["s5.jpg"]  # empty and all-zero idlocate = absent
    np.testing.assert_array_equal(p[0]["gallery_gt"]["s5.jpg"], [20, 10, 50, 60])
    assert list(p[1]["gallery_gt"]) == ["s6.jpg"] and p[1]["query_pid"] == 9
    full = load_cuhk_sysu_protocol(cuhk, -1)
    for q in full:  # every pool image except the query's own
        gallery = list(q["gallery_image_ids"])
        assert q["query_image_id"] not in gallery
        assert sorted(gallery + [q["query_image_id"]]) == sorted(POOL)
        assert len(q["gallery_image_ids"]) == 3
    assert list(full[1]["gallery_image_ids"]) == ["s4.jpg", "s6.jpg", "s7.jpg"]
    assert full[1]["gallery_image_ids"][-1] == "s7.jpg"
    assert list(full[1]["gallery_gt"]) == ["s6.jpg"]
    with pytest.raises(FileNotFoundError, match="TestG100.mat"):
        load_cuhk_sysu_protocol(cuhk, 100)
    with pytest.raises(ValueError, match="gallery_size"):
        load_cuhk_sysu_protocol(cuhk, 0)


@pytest.mark.parametrize("empty", [(1, 0), (0, 0)])
def test_empty_box_arrays_1x0_and_0x0(tmp_path, empty):
    # Empty idlocate (person absent from a gallery image) as in the real files (1x0) and as
    # some writers produce it (0x0); an image without person (struct / numeric box arrays).
    root = write_cuhk(str(tmp_path / "c"), empty=empty)
    mat = scipy.io.loadmat(os.path.join(root, "annotation", "test", "train_test", "TestG3.mat"))
    assert mat["TestG3"]["Gallery"][0, 0]["idlocate"][0, 1].shape == empty  # really written so
    p = load_cuhk_sysu_protocol(root, 3)
    assert list(p[0]["gallery_image_ids"]) == ["s5.jpg", "s6.jpg", "s7.jpg"]
    assert list(p[0]["gallery_gt"]) == ["s5.jpg"] and list(p[1]["gallery_gt"]) == ["s6.jpg"]
    np.testing.assert_array_equal(p[1]["gallery_gt"]["s6.jpg"], [5, 5, 25, 45])
    anno = tmp_path / "bare" / "annotation"
    os.makedirs(anno)
    empties = [
        np.zeros(empty, dtype=[("idlocate", object)]),  # struct array of boxes
        np.zeros(empty),  # numeric n x 4
    ]
    rows = [{"imname": f"e{i}.jpg", "nAppear": 0.0, "box": b} for i, b in enumerate(empties)]
    rows.append(
        {
            "imname": "s.jpg",
            "nAppear": 1.0,
            "box": _struct([{"idlocate": _box([1, 2, 3, 4])}], ["idlocate"]),
        }
    )
    scipy.io.savemat(anno / "Images.mat", {"Img": _struct(rows, ["imname", "nAppear", "box"])})
    boxes = _read_images_mat(str(tmp_path / "bare"))
    assert [b.shape for b in boxes.values()] == [(0, 4), (0, 4), (1, 4)]
    np.testing.assert_array_equal(boxes["s.jpg"], [[1, 2, 4, 6]])


def test_alternative_shapes_give_identical_records(tmp_path, cuhk):
    alt = write_cuhk(str(tmp_path / "alt"), variant="alt")
    for loader in (load_cuhk_sysu_train, load_cuhk_sysu_gallery, load_cuhk_sysu_query):
        a, b = loader(cuhk), loader(alt)
        assert len(a) == len(b)
        for ra, rb in zip(a, b):
            assert ra["image_id"] == rb["image_id"]
            np.testing.assert_array_equal(ra["boxes"], rb["boxes"])
            np.testing.assert_array_equal(ra["pids"], rb["pids"])


def test_helpers_accept_squeezed_loadmat(cuhk, mat_strings):
    path = os.path.join(cuhk, "annotation", "Images.mat")
    for kw in ({"squeeze_me": True}, {"squeeze_me": True, "struct_as_record": False}):
        img = scipy.io.loadmat(path, **kw)["Img"]
        assert mat_strings(img, "imname") == list(IMAGES)
    pool = scipy.io.loadmat(os.path.join(cuhk, "annotation", "pool.mat"), squeeze_me=True)
    assert mat_strings(pool["pool"]) == POOL


def test_missing_and_malformed_files_are_named(tmp_path, cuhk):
    anno = os.path.join(cuhk, "annotation")
    os.remove(os.path.join(anno, "pool.mat"))
    with pytest.raises(FileNotFoundError, match="pool.mat"):
        load_cuhk_sysu_train(cuhk)
    scipy.io.savemat(os.path.join(anno, "pool.mat"), {"gallery": _cell(POOL)})
    with pytest.raises(ValueError, match=r"pool\.mat has no variable 'pool'"):
        load_cuhk_sysu_train(cuhk)
    with open(os.path.join(anno, "pool.mat"), "wb") as f:
        f.write(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="Cannot read MATLAB file .*pool.mat"):
        load_cuhk_sysu_gallery(cuhk)
    scipy.io.savemat(os.path.join(anno, "pool.mat"), {"pool": _cell(POOL)})
    bad = _struct([{"imname": "s1.jpg", "nAppear": 1.0}], ["imname", "nAppear"])
    scipy.io.savemat(os.path.join(anno, "Images.mat"), {"Img": bad})
    with pytest.raises(ValueError, match=r"Images\.mat: Img\[0\]: struct has no field 'box'"):
        load_cuhk_sysu_train(cuhk)
    other = write_cuhk(str(tmp_path / "other"))
    os.remove(os.path.join(other, "Image", "SSM", "s2.jpg"))
    with pytest.raises(FileNotFoundError, match=r"s2\.jpg"):
        load_cuhk_sysu_train(other)
    for f in os.listdir(os.path.join(other, "annotation", "test", "train_test")):
        if f.startswith("TestG"):
            os.remove(os.path.join(other, "annotation", "test", "train_test", f))
    with pytest.raises(FileNotFoundError, match="TestG50.mat"):
        load_cuhk_sysu_gallery(other)


def test_image_size_cache(cuhk):
    load_cuhk_sysu_train(cuhk)
    cache_file = os.path.join(cuhk, "annotation", "image_sizes.json")
    with open(cache_file) as f:
        cache = json.load(f)
    assert cache["s1.jpg"][:2] == [70, 90]
    cache["s1.jpg"][:2] = [7, 9]  # same byte size: the cached value is trusted
    with open(cache_file, "w") as f:
        json.dump(cache, f)
    assert (_by_id(load_cuhk_sysu_train(cuhk))["s1.jpg"]["height"]) == 7
    img = os.path.join(cuhk, "Image", "SSM", "s1.jpg")
    Image.new("RGB", (40, 30), (250, 10, 10)).save(img)  # changed file: read again
    r = _by_id(load_cuhk_sysu_train(cuhk))["s1.jpg"]
    assert (r["height"], r["width"]) == (30, 40)


def test_registered_lazily_with_metadata(tmp_path, monkeypatch):
    write_cuhk(str(tmp_path / "cuhk_sysu"), testg=(3, 5))
    monkeypatch.setenv("REID_DATASETS", str(tmp_path))
    for name in ("cuhk_sysu_train", "cuhk_sysu_gallery", "cuhk_sysu_query"):
        assert name in DatasetCatalog.list()
    assert len(DatasetCatalog.get("cuhk_sysu_train")) == 3
    meta = MetadataCatalog.get("cuhk_sysu_train")
    assert (meta.num_images, meta.num_pids, meta.num_labeled_boxes) == (3, 2, 4)
    assert meta.unlabeled_pid == UNLABELED_PID
    queries = DatasetCatalog.get("cuhk_sysu_query")
    meta = MetadataCatalog.get("cuhk_sysu_query")
    assert meta.gallery_sizes == [3, 5] and meta.num_queries == len(queries) == 2
    assert len(meta.load_protocol(-1)[0]["gallery_image_ids"]) == 3


def test_parsed_protocol_cache(cuhk, monkeypatch):
    import reid_plugins.data.datasets.cuhk_sysu as mod

    mat = os.path.join(cuhk, "annotation", "test", "train_test", "TestG3.mat")
    cache = protocol_cache_path(cuhk, 3)
    assert os.path.dirname(cache) == os.path.dirname(mat) and not os.path.exists(cache)
    first = load_cuhk_sysu_protocol(cuhk, 3)
    assert os.path.exists(cache)
    calls = []
    parse = mod._parse_testg
    monkeypatch.setattr(mod, "_parse_testg", lambda *a: calls.append(a) or parse(*a))
    again = load_cuhk_sysu_protocol(cuhk, 3)  # from the cache: no parsing
    assert calls == []
    for a, b in zip(first, again):
        assert a["query_image_id"] == b["query_image_id"] and a["query_pid"] == b["query_pid"]
        np.testing.assert_array_equal(a["query_box"], b["query_box"])
        assert list(a["gallery_image_ids"]) == list(b["gallery_image_ids"])
        assert a["gallery_gt"].keys() == b["gallery_gt"].keys()
        for k in a["gallery_gt"]:
            np.testing.assert_array_equal(a["gallery_gt"][k], b["gallery_gt"][k])
    # a changed .mat (new modification time) is parsed again and the cache rewritten
    st = os.stat(mat)
    os.utime(mat, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_cuhk_sysu_protocol(cuhk, 3)
    assert len(calls) == 1
    load_cuhk_sysu_protocol(cuhk, 3)
    assert len(calls) == 1
    # a corrupt cache is ignored (and replaced)
    with open(cache, "wb") as f:
        f.write(b"not an npz")
    assert len(load_cuhk_sysu_protocol(cuhk, 3)) == len(first) and len(calls) == 2
    # a folder that cannot be written (read-only dataset): no cache, no error, no leftovers
    import reid_plugins.data.datasets.scene_common as common

    os.remove(cache)

    def refuse(path, **arrays):
        open(path, "wb").close()  # a partial file, then the failure
        raise PermissionError(13, "Read-only file system", path)

    monkeypatch.setattr(common.np, "savez", refuse)
    assert len(load_cuhk_sysu_protocol(cuhk, 3)) == len(first)
    assert not [n for n in os.listdir(os.path.dirname(cache)) if n.startswith(".TestG3")]
