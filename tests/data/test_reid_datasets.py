"""ReID dataset loaders on tiny fixture trees written in the real layouts."""

import logging
import os
import uuid

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from reid_plugins.data import DatasetCatalog, MetadataCatalog
from reid_plugins.data.datasets import combine_sources, domain_pid_counts, register_market_style
from reid_plugins.data.datasets.common import combine_splits, reid_statistics
from reid_plugins.data.datasets.cuhk03 import extract_cuhk03_images, find_cuhk03_np_layout
from reid_plugins.data.datasets.cuhk_sysu_reid import parse_cuhk_sysu_train
from reid_plugins.data.datasets.market1501 import load_market1501
from reid_plugins.data.datasets.msmt17 import load_msmt17


def _img(path, colour=(0, 0, 0), h=8, w=4):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = colour
    assert cv2.imwrite(str(path), img)


def _base(records):
    return sorted((os.path.basename(r["file_name"]), r["pid"], r["camid"]) for r in records)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("REID_DATASETS", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------- Market / Duke

MARKET_FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0007_c1s2_000100_01.jpg",
        "0007_c3s1_000200_02.jpg",
        "0010_c6s1_000300_01.jpg",
        "-1_c1s1_000001_00.jpg",  # junk: dropped
        "0000_c2s1_000002_00.jpg",  # distractor: never in train
    ],
    "query": [
        "0003_c1s1_000010_00.jpg",
        "0005_c2s1_000020_00.jpg",
        "-1_c1s1_000030_00.jpg",
        "0000_c3s1_000040_00.jpg",
    ],
    "bounding_box_test": [
        "0003_c1s1_000011_01.jpg",
        "0003_c4s1_000012_01.jpg",
        "0005_c5s1_000021_01.jpg",
        "0009_c6s1_000050_01.jpg",
        "0000_c1s1_000060_00.jpg",  # distractor: kept in gallery
        "-1_c2s1_000070_00.jpg",  # junk: dropped
    ],
}


def _market(root, rel=os.path.join("market1501", "Market-1501-v15.09.15"), files=MARKET_FILES):
    for folder, names in files.items():
        for n in names:
            _img(os.path.join(root, rel, folder, n))
    (root / rel / "bounding_box_train" / "Thumbs.db").write_text("not an image")


def test_market1501_train_rules_and_metadata(root, caplog):
    _market(root)
    with caplog.at_level(logging.INFO):
        recs = DatasetCatalog.get("market1501_train")
    assert _base(recs) == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000551_01.jpg", 0, 1),
        ("0007_c1s2_000100_01.jpg", 1, 0),
        ("0007_c3s1_000200_02.jpg", 1, 2),
        ("0010_c6s1_000300_01.jpg", 2, 5),
    ]
    assert all(os.path.isabs(r["file_name"]) and r["dataset"] == "market1501_train" for r in recs)
    assert all("is_query" not in r for r in recs)
    meta = MetadataCatalog.get("market1501_train")
    assert (meta.num_pids, meta.num_images, meta.num_cams) == (3, 5, 4)
    assert "| train  | 3   | 5      | 4       |" in caplog.text


def test_market1501_test_query_gallery(root):
    _market(root)
    recs = DatasetCatalog.get("market1501_test")
    query = [r for r in recs if r["is_query"]]
    gallery = [r for r in recs if not r["is_query"]]
    assert _base(query) == [("0003_c1s1_000010_00.jpg", 3, 0), ("0005_c2s1_000020_00.jpg", 5, 1)]
    assert _base(gallery) == [
        ("0000_c1s1_000060_00.jpg", 0, 0),
        ("0003_c1s1_000011_01.jpg", 3, 0),
        ("0003_c4s1_000012_01.jpg", 3, 3),
        ("0005_c5s1_000021_01.jpg", 5, 4),
        ("0009_c6s1_000050_01.jpg", 9, 5),
    ]
    m = MetadataCatalog.get("market1501_test")
    assert (m.num_query, m.num_gallery, m.num_images) == (2, 5, 7)
    assert (m.num_query_pids, m.num_gallery_pids, m.num_distractors, m.num_pids) == (2, 3, 1, 3)
    assert m.num_cams == 5 and m.distractor_pid == 0


def test_market1501_combined_drops_junk_and_distractors(root):
    _market(root)
    recs = DatasetCatalog.get("market1501_combined_train")
    # train ids 2, 7, 10 + test ids 3, 5, 9 -> 0..5; 5 train + 2 query + 4 gallery images
    assert len(recs) == 11 and sorted({r["pid"] for r in recs}) == list(range(6))
    by_name = {os.path.basename(r["file_name"]): r["pid"] for r in recs}
    assert by_name["0003_c1s1_000010_00.jpg"] == by_name["0003_c4s1_000012_01.jpg"]
    assert not any(n.startswith(("0000_", "-1_")) for n in by_name)
    assert MetadataCatalog.get("market1501_combined_train").num_pids == 6


def test_market_bad_names_raise(root):
    _market(root)
    d = os.path.join(root, "market1501", "Market-1501-v15.09.15", "bounding_box_train")
    _img(os.path.join(d, "0001_c7s1_000001_00.jpg"))  # Market has cameras 1..6
    with pytest.raises(ValueError, match="c7"):
        load_market1501(str(root), "train")
    os.remove(os.path.join(d, "0001_c7s1_000001_00.jpg"))
    _img(os.path.join(d, "person.jpg"))
    with pytest.raises(ValueError, match="person.jpg"):
        load_market1501(str(root), "train")
    with pytest.raises(ValueError, match="split"):
        load_market1501(str(root), "val")


def test_dukemtmc_naming(root):
    rel = os.path.join("dukemtmc", "DukeMTMC-reID")
    files = {
        "bounding_box_train": [
            "0001_c2_f0046182.jpg",
            "0001_c8_f0046999.jpg",
            "0004_c1_f0000001.jpg",
        ],
        "query": ["0005_c2_f0000002.jpg"],
        "bounding_box_test": ["0005_c7_f0000003.jpg", "0008_c3_f0000004.jpg"],
    }
    _market(root, rel, files)
    tr = DatasetCatalog.get("dukemtmc_train")
    assert _base(tr) == [
        ("0001_c2_f0046182.jpg", 0, 1),
        ("0001_c8_f0046999.jpg", 0, 7),
        ("0004_c1_f0000001.jpg", 1, 0),
    ]
    te = DatasetCatalog.get("dukemtmc_test")
    assert [r["is_query"] for r in te] == [True, False, False]
    assert MetadataCatalog.get("dukemtmc_test").num_gallery_pids == 2


def test_register_market_style_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("REID_DATASETS", str(tmp_path / "elsewhere"))
    _market(tmp_path, "mine", MARKET_FILES)
    name = f"mydata_{uuid.uuid4().hex[:6]}"
    names = register_market_style(name, str(tmp_path / "mine"), combined=True)
    try:
        assert names == [f"{name}_train", f"{name}_test", f"{name}_combined_train"]
        assert len(DatasetCatalog.get(f"{name}_train")) == 5
        assert "num_query" not in MetadataCatalog.get(f"{name}_test")  # filled when loaded
        assert len(DatasetCatalog.get(f"{name}_test")) == 7
        assert MetadataCatalog.get(f"{name}_test").num_query == 2
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


# ----------------------------------------------------------------------------- MSMT17


def _msmt(root, version):
    folder, tr, te = {
        "v1": ("MSMT17_V1", "train", "test"),
        "v2": ("MSMT17_V2", "mask_train_v2", "mask_test_v2"),
    }[version]
    base = root / "msmt17" / folder
    lists = {
        "list_train.txt": (
            tr,
            [
                ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                ("0000/0000_001_05_0303morning_0016_0.jpg", 0),
                ("0003/0003_000_15_0303noon_0017_0.jpg", 3),
            ],
        ),
        "list_val.txt": (
            tr,
            [
                ("0003/0003_001_02_0303noon_0018_0.jpg", 3),
                ("0005/0005_000_07_0303noon_0019_0.jpg", 5),
            ],
        ),
        "list_query.txt": (
            te,
            [
                ("0000/0000_000_03_0113morning_0001_0.jpg", 0),
                ("0002/0002_000_04_0113morning_0002_0.jpg", 2),
            ],
        ),
        "list_gallery.txt": (
            te,
            [
                ("0000/0000_002_09_0113noon_0003_0.jpg", 0),
                ("0002/0002_003_10_0113noon_0004_0.jpg", 2),
                ("0001/0001_000_11_0113noon_0005_0.jpg", 1),
            ],
        ),
    }
    for list_name, (img_dir, rows) in lists.items():
        for rel, _ in rows:
            _img(os.path.join(base, img_dir, rel))
        (base / list_name).write_text("".join(f"{rel} {pid}\n" for rel, pid in rows) + "\n")
    return base


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_msmt17_lists(root, version):
    base = _msmt(root, version)
    tr = DatasetCatalog.get(f"msmt17_{version}_train")
    # train + val merged, raw pids 0, 3, 5 -> 0, 1, 2; camera = third field - 1
    assert [(r["pid"], r["camid"]) for r in tr] == [(0, 0), (0, 4), (1, 14), (1, 1), (2, 6)]
    assert os.path.dirname(os.path.dirname(tr[0]["file_name"])).startswith(str(base))
    te = DatasetCatalog.get(f"msmt17_{version}_test")
    assert [(r["pid"], r["camid"], r["is_query"]) for r in te] == [
        (0, 2, True),
        (2, 3, True),
        (0, 8, False),
        (2, 9, False),
        (1, 10, False),
    ]
    m = MetadataCatalog.get(f"msmt17_{version}_test")
    # MSMT17 pid 0 is a real person, not a distractor
    assert (m.num_distractors, m.num_gallery_pids, m.num_pids) == (0, 3, 3)
    comb = DatasetCatalog.get(f"msmt17_{version}_combined_train")
    # 3 train ids + 3 test ids (test pid 0 is not train pid 0) over 10 images
    assert len(comb) == 10 and len({r["pid"] for r in comb}) == 6
    train_pid0 = {r["pid"] for r in comb if "_000_01_0303" in r["file_name"]}
    test_pid0 = {r["pid"] for r in comb if "0113morning_0001" in r["file_name"]}
    assert train_pid0 != test_pid0
    assert MetadataCatalog.get(f"msmt17_{version}_combined_train").num_pids == 6


def test_msmt17_errors(root):
    base = _msmt(root, "v1")
    (base / "list_val.txt").write_text("0003/0003_001_02_0303noon_0018_0.jpg\n")
    with pytest.raises(ValueError, match=r"list_val.txt:1"):
        load_msmt17(str(root), "train", "v1")
    os.remove(base / "list_val.txt")
    with pytest.raises(FileNotFoundError, match="list_val.txt"):
        load_msmt17(str(root), "train", "v1")
    with pytest.raises(FileNotFoundError, match="MSMT17_V2"):
        load_msmt17(str(root), "train", "v2")


# ----------------------------------------------------------------------------- CUHK03


def _person_image(subset, pair, person, idx):
    """Distinct 6x3 RGB image; colour encodes (subset, pair, person, idx)."""
    img = np.zeros((6, 3, 3), np.uint8)
    img[..., 0] = 10 * pair + person
    img[..., 1] = 20 * idx
    img[..., 2] = 100 if subset == "detected" else 200
    img[0, 0] = (255, 0, 0)  # orientation marker (top-left, red)
    return img


# (pair, person) -> number of filled cells (first n of 10; the rest are empty cells)
CUHK03_PERSONS = {"detected": [[3, 10, 7], [6, 2]], "labeled": [[4, 10, 8], [6, 1]]}
TESTSETS = [[(1, 2), (2, 1)], [(1, 1), (2, 2)]]


def _cuhk03_mat(path):
    """MATLAB v7.3 (HDF5, 512-byte user block) cuhk-03.mat: cells are object references."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def put(data):
            counter[0] += 1
            return refs.create_dataset(f"r{counter[0]}", data=data).ref

        for subset, pairs in CUHK03_PERSONS.items():
            pair_refs = []
            for pair, persons in enumerate(pairs, 1):
                cell = np.empty((10, len(persons)), dtype=h5py.ref_dtype)  # MATLAB N x 10
                for person, n in enumerate(persons, 1):
                    for idx in range(1, 11):
                        if idx <= n:
                            data = _person_image(subset, pair, person, idx).transpose(2, 1, 0)
                        else:
                            data = np.zeros(2, np.uint64)  # MATLAB empty matrix
                        cell[idx - 1, person - 1] = put(data)
                pair_refs.append(put(cell))
            f.create_dataset(subset, data=np.array([pair_refs], dtype=h5py.ref_dtype))
        ts = [put(np.array(t, np.float64).T) for t in TESTSETS]
        f.create_dataset("testsets", data=np.array([ts], dtype=h5py.ref_dtype))


def test_cuhk03_old_protocol(root):
    _cuhk03_mat(root / "cuhk03" / "cuhk03_release" / "cuhk-03.mat")
    tr = DatasetCatalog.get("cuhk03_train")
    ex = root / "cuhk03" / "images_extracted"
    # extracted images keep pixels and orientation; view 1 = images 1..5
    img = cv2.imread(str(ex / "detected" / "1_003_2_07.png"))[:, :, ::-1]
    np.testing.assert_array_equal(img, _person_image("detected", 1, 3, 7))
    assert not (ex / "detected" / "1_001_1_04.png").exists()  # empty cell
    # train = (1,1), (1,3), (2,2): labeled + detected pooled
    n_train = 3 + 7 + 2 + 4 + 8 + 1
    assert len(tr) == n_train and sorted({r["pid"] for r in tr}) == [0, 1, 2]
    assert {r["camid"] for r in tr} == {0, 1}
    assert all(r["camid"] == (int(os.path.basename(r["file_name"])[6]) - 1) for r in tr)
    te = DatasetCatalog.get("cuhk03_test")
    q = [r for r in te if r["is_query"]]
    g = [r for r in te if not r["is_query"]]
    assert len(q) == len(g) == 10 + 6 + 10 + 6
    assert {r["pid"] for r in q} == {1002, 2001}
    assert _base(q) == _base(g)
    m = MetadataCatalog.get("cuhk03_train")
    assert (m.num_pids, m.num_images, m.num_cams) == (3, n_train, 2)
    # extraction happens once
    os.remove(root / "cuhk03" / "cuhk03_release" / "cuhk-03.mat")
    assert len(DatasetCatalog.get("cuhk03_train")) == n_train


def test_cuhk03_v5_mat_fallback(root):
    """A MATLAB v5 cuhk-03.mat (scipy) extracts to the same names and pixels."""
    d = root / "cuhk03" / "cuhk03_release"
    d.mkdir(parents=True)
    content = {}
    for subset, pairs in CUHK03_PERSONS.items():
        cells = np.empty((1, len(pairs)), object)
        for pair, persons in enumerate(pairs, 1):
            c = np.empty((len(persons), 10), object)
            for person, n in enumerate(persons, 1):
                for idx in range(1, 11):
                    c[person - 1, idx - 1] = (
                        _person_image(subset, pair, person, idx) if idx <= n else np.zeros((0, 0))
                    )
            cells[0, pair - 1] = c
        content[subset] = cells
    ts = np.empty((1, 2), object)
    for i, t in enumerate(TESTSETS):
        ts[0, i] = np.array(t, np.float64)
    content["testsets"] = ts
    scipy.io.savemat(str(d / "cuhk-03.mat"), content)
    out = extract_cuhk03_images(str(root / "cuhk03"), ("labeled",))
    img = cv2.imread(os.path.join(out, "labeled", "2_001_2_06.png"))[:, :, ::-1]
    np.testing.assert_array_equal(img, _person_image("labeled", 2, 1, 6))
    assert len(os.listdir(os.path.join(out, "labeled"))) == 4 + 10 + 8 + 6 + 1


def _np_config(root, subset):
    # (pair, person, idx) entries; labels are the config's person ids (1-based, raw)
    entries = [(1, 3, 2), (1, 3, 7), (2, 1, 1), (2, 1, 6), (1, 2, 3), (1, 2, 8), (2, 2, 1)]
    filelist = np.empty((len(entries), 1), object)
    for i, (p, q, k) in enumerate(entries):
        filelist[i, 0] = f"{p}_{q:03d}_{1 if k <= 5 else 2}_{k:02d}.png"
    (root / "cuhk03").mkdir(exist_ok=True)
    scipy.io.savemat(
        str(root / "cuhk03" / f"cuhk03_new_protocol_config_{subset}.mat"),
        {
            "train_idx": np.array([[1], [2], [3], [4]], np.float64),
            "query_idx": np.array([[5]], np.float64),
            "gallery_idx": np.array([[6], [7]], np.float64),
            "labels": np.array([[13], [13], [21], [21], [12], [12], [22]], np.float64),
            "filelist": filelist,
            "camId": np.array([[1], [2], [1], [2], [1], [2], [1]], np.float64),
        },
    )


def test_cuhk03_np_mat_config(root, caplog):
    _cuhk03_mat(root / "cuhk03" / "cuhk03_release" / "cuhk-03.mat")
    _np_config(root, "detected")
    with caplog.at_level(logging.INFO):
        tr = DatasetCatalog.get("cuhk03_np_detected_train")
    assert "cuhk03_new_protocol_config_detected.mat" in caplog.text
    assert _base(tr) == [
        ("1_003_1_02.png", 0, 0),
        ("1_003_2_07.png", 0, 1),
        ("2_001_1_01.png", 1, 0),
        ("2_001_2_06.png", 1, 1),
    ]
    assert all("images_extracted" + os.sep + "detected" in r["file_name"] for r in tr)
    assert all(os.path.isfile(r["file_name"]) for r in tr)
    te = DatasetCatalog.get("cuhk03_np_detected_test")
    assert [(r["pid"], r["camid"], r["is_query"]) for r in te] == [
        (12, 0, True),
        (12, 1, False),
        (22, 0, False),
    ]
    m = MetadataCatalog.get("cuhk03_np_detected_test")
    assert m.layout.startswith(".mat config") and m.subset == "detected"
    assert (m.num_query, m.num_gallery, m.num_distractors) == (1, 2, 0)
    assert len(DatasetCatalog.get("cuhk03_np_detected_combined_train")) == 7
    # only the detected subset was extracted
    assert not (root / "cuhk03" / "images_extracted" / "labeled").exists()


def test_cuhk03_np_market_layout_preferred(root, caplog):
    _np_config(root, "labeled")  # present, but the Market-style folder wins
    rel = os.path.join("cuhk03", "cuhk03-np", "labeled")
    files = {
        "bounding_box_train": ["0001_c1_1.png", "0001_c2_1.png", "0002_c1_1.png"],
        "query": ["0004_c1_1.png"],
        "bounding_box_test": ["0004_c2_1.png", "0005_c2_1.png"],
    }
    _market(root, rel, {k: [n.replace(".png", ".jpg") for n in v] for k, v in files.items()})
    assert find_cuhk03_np_layout(str(root), "labeled")[0] == "market"
    with caplog.at_level(logging.INFO):
        tr = DatasetCatalog.get("cuhk03_np_labeled_train")
    assert "Market-style folder" in caplog.text
    assert [(r["pid"], r["camid"]) for r in tr] == [(0, 0), (0, 1), (1, 0)]
    assert MetadataCatalog.get("cuhk03_np_labeled_train").layout.startswith("Market-style")
    te = DatasetCatalog.get("cuhk03_np_labeled_test")
    assert sum(r["is_query"] for r in te) == 1 and len(te) == 3


def test_cuhk03_np_missing_names_every_layout(root):
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("cuhk03_np_detected_train")
    msg = str(e.value)
    assert "cuhk03_new_protocol_config_detected.mat" in msg and "REID_DATASETS" in msg
    assert os.path.join("cuhk03", "cuhk03-np", "detected") in msg
    _np_config(root, "detected")  # config present, cuhk-03.mat missing: named
    with pytest.raises(FileNotFoundError, match="cuhk-03.mat"):
        DatasetCatalog.get("cuhk03_np_detected_train")


# ----------------------------------------------------------------------------- CUHK-SYSU


def _sysu(root):
    def scenes(lst):
        a = np.zeros((1, len(lst)), dtype=[("imname", "O"), ("idlocate", "O"), ("ishard", "O")])
        for i, (n, b) in enumerate(lst):
            a[0, i] = (n, np.array(b, np.float64).reshape(1, 4), 0.0)
        return a

    ident = [
        [("s1.jpg", [2, 3, 4, 10]), ("s2.jpg", [0, 0, 6, 8])],
        [("s2.jpg", [10, 5, 5, 20])],  # clipped at the bottom (image height 20)
        [("s1.jpg", [1, 1, 0, 5]), ("s3.jpg", [5, 5, 5, 5])],  # w = 0: skipped
    ]
    train = np.empty((len(ident), 1), object)
    for i, lst in enumerate(ident):
        train[i, 0] = {"idname": f"p{i + 1:05d}", "nAppear": float(len(lst)), "scene": scenes(lst)}
    ann = root / "cuhk_sysu" / "annotation" / "test" / "train_test"
    ann.mkdir(parents=True)
    scipy.io.savemat(str(ann / "Train.mat"), {"Train": train})
    img_dir = root / "cuhk_sysu" / "Image" / "SSM"
    img_dir.mkdir(parents=True)
    yy, xx = np.mgrid[0:20, 0:16]
    for k, name in enumerate(["s1.jpg", "s2.jpg", "s3.jpg"]):
        scene = np.stack([xx * 15, yy * 12, np.full_like(xx, 60 * k)], -1).astype(np.uint8)
        cv2.imwrite(str(img_dir / name), scene)
    return ident


def test_cuhk_sysu_reid_crops(root):
    ident = _sysu(root)
    parsed = parse_cuhk_sysu_train(str(root / "cuhk_sysu/annotation/test/train_test/Train.mat"))
    assert [[(n, b.tolist()) for n, b in s] for s in parsed] == [
        [(n, [float(v) for v in b]) for n, b in s] for s in ident
    ]
    recs = DatasetCatalog.get("cuhk_sysu_reid_train")
    crops = root / "cuhk_sysu" / "reid_crops" / "bounding_box_train"
    assert sorted(os.listdir(crops)) == [
        "0001_c1s1_000000_00.jpg",
        "0001_c1s1_000001_00.jpg",
        "0002_c1s1_000000_00.jpg",
        "0003_c1s1_000001_00.jpg",
    ]
    assert cv2.imread(str(crops / "0001_c1s1_000000_00.jpg")).shape[:2] == (10, 4)
    assert cv2.imread(str(crops / "0002_c1s1_000000_00.jpg")).shape[:2] == (15, 5)
    crop = cv2.imread(str(crops / "0001_c1s1_000000_00.jpg")).astype(int)
    assert abs(crop[0, 0, 0] - 30) <= 8 and abs(crop[0, 0, 1] - 36) <= 8  # x=2, y=3
    assert [r["pid"] for r in recs] == [0, 0, 1, 2] and {r["camid"] for r in recs} == {0}
    assert MetadataCatalog.get("cuhk_sysu_reid_train").num_pids == 3
    # cached: scene images are not needed any more
    for f in (root / "cuhk_sysu" / "Image" / "SSM").iterdir():
        f.unlink()
    assert len(DatasetCatalog.get("cuhk_sysu_reid_train")) == 4


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, expected",
    [
        ("market1501_train", "market1501/Market-1501-v15.09.15/bounding_box_train"),
        ("market1501_test", "market1501/Market-1501-v15.09.15/query"),
        ("dukemtmc_test", "dukemtmc/DukeMTMC-reID/query"),
        ("msmt17_v1_train", "msmt17/MSMT17_V1"),
        ("msmt17_v2_combined_train", "msmt17/MSMT17_V2"),
        ("cuhk03_train", "cuhk03/cuhk03_release/cuhk-03.mat"),
        ("cuhk_sysu_reid_train", "cuhk_sysu/annotation/test/train_test/Train.mat"),
    ],
)
def test_missing_root_names_path(root, name, expected):
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(name)
    assert f"'{os.path.join(str(root), *expected.split('/'))}'" in str(e.value)
    assert "REID_DATASETS" in str(e.value)


# ----------------------------------------------------------------------------- multi-source


def test_combine_sources_relabels_per_domain():
    a = [
        {"file_name": f"a{i}", "pid": p, "camid": 0, "dataset": "A_train"}
        for i, p in enumerate([9, 5, 9])
    ]
    b = [{"file_name": f"b{i}", "pid": p, "camid": 1} for i, p in enumerate([7, 0, 3, 7])]
    out = combine_sources([("A_train", a), ("B_train", b)])
    assert [(r["domain"], r["domain_pid"], r["pid"]) for r in out] == [
        (0, 1, 1),
        (0, 0, 0),
        (0, 1, 1),
        (1, 2, 4),
        (1, 0, 2),
        (1, 1, 3),
        (1, 2, 4),
    ]
    assert [r["dataset"] for r in out] == ["A_train"] * 3 + ["B_train"] * 4
    assert a[0] == {"file_name": "a0", "pid": 9, "camid": 0, "dataset": "A_train"}  # not mutated
    assert domain_pid_counts(out) == [2, 3]
    assert domain_pid_counts(out[3:]) == [0, 3]
    with pytest.raises(ValueError, match="B_train"):
        combine_sources([("A_train", a), ("B_train", [])])
    with pytest.raises(ValueError, match="negative"):
        combine_sources([("A", [{"file_name": "x", "pid": -1, "camid": 0}])])
    with pytest.raises(KeyError, match="combine_sources"):
        domain_pid_counts(a)


def test_combine_splits_and_statistics():
    train = [{"file_name": "t0", "pid": 0, "camid": 0}, {"file_name": "t1", "pid": 4, "camid": 1}]
    test = [
        {"file_name": "q0", "pid": 0, "camid": 0, "is_query": True},
        {"file_name": "g0", "pid": 0, "camid": 1, "is_query": False},
        {"file_name": "g1", "pid": -1, "camid": 1, "is_query": False},
    ]
    out = combine_splits(train, test, "x", distractor_pid=None)
    assert [(r["file_name"], r["pid"]) for r in out] == [("t0", 0), ("t1", 1), ("q0", 2), ("g0", 2)]
    assert all("is_query" not in r and r["dataset"] == "x" for r in out)
    out = combine_splits(train, test, "x", distractor_pid=0)  # Market: test pid 0 = distractor
    assert [r["file_name"] for r in out] == ["t0", "t1"]
    stats = reid_statistics(test, distractor_pid=0)
    assert stats["query"] == {"ids": 1, "images": 1, "cameras": 1}
    assert stats["gallery"] == {"ids": 0, "images": 2, "cameras": 1, "distractors": 1}
