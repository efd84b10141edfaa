"""Datasets whose files list images: every listed path is checked when the dataset is loaded,
and the one-line error names the list file, the line and where to look (issue 15.3 / 15.6)."""

import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_plugins.data.catalog import DatasetCatalog
from reid_plugins.data.datasets.common import check_listed_files
from reid_plugins.data.datasets.errors import (
    DatasetError,
    DatasetFormatError,
    MissingDatasetFileError,
    dataset_error,
)
from reid_plugins.data.datasets.sources import SOURCES, dataset_source, missing_requirements


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("REID_DATASETS", str(tmp_path))
    return tmp_path


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(path)


def _msmt17_v1(root, missing_line=None):
    """MSMT17_V1 with 4 train lines (one per camera); ``missing_line`` (1-based) of
    list_train.txt names an image that is not written."""
    base = root / "msmt17" / "MSMT17_V1"
    rows = [f"000{i}/000{i}_000_0{i + 1}_0303morning_001{i}_0.jpg {i}" for i in range(4)]
    for lineno, row in enumerate(rows, 1):
        if lineno != missing_line:
            _touch(base / "train" / row.split()[0])
    (base / "list_train.txt").write_text("\n".join(rows) + "\n")
    (base / "list_val.txt").write_text("")
    (base / "test").mkdir(parents=True)
    return base


def test_check_listed_files_names_first_missing_line_and_count(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"x")
    check_listed_files("list.txt", [(1, str(a))])  # all present: no error
    with pytest.raises(MissingDatasetFileError) as e:
        check_listed_files("list.txt", [(1, str(a)), (7, str(b)), (9, str(tmp_path))])
    # a folder is not an image either: 2 of 3 missing, the first one's line is named
    assert (
        str(e.value)
        == f"list.txt:7: listed image '{b}' does not exist (2 of 3 listed images are missing)"
    )
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DatasetError)


@pytest.mark.parametrize("missing_line", [1, 3])
def test_msmt17_list_naming_a_missing_image_fails_at_load(root, missing_line):
    base = _msmt17_v1(root, missing_line)
    with pytest.raises(MissingDatasetFileError) as e:
        DatasetCatalog.get("msmt17_v1_train")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("Dataset 'msmt17_v1_train': ")
    assert f"{base / 'list_train.txt'}:{missing_line}: listed image" in msg
    assert "(1 of 4 listed images are missing)" in msg
    assert msg.endswith(
        "See datasets/README.md (MSMT17); check with: python tools/check_dataset.py "
        "msmt17_v1_train"
    )


def test_msmt17_complete_list_loads(root):
    _msmt17_v1(root)
    assert [r["camid"] for r in DatasetCatalog.get("msmt17_v1_train")] == [0, 1, 2, 3]


def test_malformed_line_is_a_one_line_format_error(root):
    base = _msmt17_v1(root)
    (base / "list_val.txt").write_text("0000/0000_000_01_0303morning_0010_0.jpg\n")
    with pytest.raises(DatasetFormatError, match=r"list_val.txt:1: expected '<path> <pid>'"):
        DatasetCatalog.get("msmt17_v1_train")


def _prw(root, frames, missing=()):
    prw = root / "prw"
    for f in frames:
        if f not in missing:
            _touch(prw / "frames" / f"{f}.jpg")
        os.makedirs(prw / "annotations", exist_ok=True)
        scipy.io.savemat(
            prw / "annotations" / f"{f}.jpg.mat", {"box_new": np.array([[1, 0, 0, 2, 4.0]])}
        )
    cell = np.empty((len(frames), 1), dtype=object)
    cell[:, 0] = frames
    scipy.io.savemat(prw / "frame_train.mat", {"img_index_train": cell})
    return prw


def test_prw_frame_list_naming_a_missing_frame(root):
    prw = _prw(root, ["c1s1_000001", "c2s1_000002", "c3s1_000003"], missing={"c2s1_000002"})
    with pytest.raises(MissingDatasetFileError) as e:
        DatasetCatalog.get("prw_train")
    msg = str(e.value)
    assert f"{prw / 'frame_train.mat'}: entry 2: listed image" in msg
    assert "c2s1_000002.jpg' does not exist (1 of 3 listed images are missing)" in msg
    assert msg.endswith(
        "See datasets/README.md (PRW); check with: python tools/check_dataset.py prw_train"
    )


def test_prw_without_data_names_the_file_readme_and_tool(root):
    """The message train_net.py ends with when PRW is absent (the CLI prints it as one line)."""
    with pytest.raises(MissingDatasetFileError) as e:
        DatasetCatalog.get("prw_train")
    assert str(e.value) == (
        f"Dataset 'prw_train': expected annotation file '{root / 'prw' / 'frame_train.mat'}' "
        f"does not exist (datasets are read under $REID_DATASETS, now '{root}'). See "
        "datasets/README.md (PRW); check with: python tools/check_dataset.py prw_train"
    )


def test_dataset_error_keeps_one_line_and_type():
    e = dataset_error(KeyError("no field\n'x'"), "d")
    assert isinstance(e, DatasetFormatError) and isinstance(e, ValueError)
    assert (
        str(e)
        == "Dataset 'd': no field 'x'. See datasets/README.md; check with: python tools/check_dataset.py d"
    )
    again = dataset_error(e, "d")  # idempotent
    assert str(again) == str(e)
    import pickle

    assert str(pickle.loads(pickle.dumps(again))) == str(e)


def test_every_registered_name_has_a_source():
    names = DatasetCatalog.list()
    assert names
    assert [n for n in names if dataset_source(n) is None] == []
    # the patterns are not ambiguous: the first match is the only match (crops excepted)
    import re

    for n in names:
        hits = [s.title for s in SOURCES if re.fullmatch(s.pattern, n)]
        assert len(hits) == 1, (n, hits)


def test_missing_requirements_lists_every_missing_path(root):
    miss = missing_requirements("msmt17_v2_test", str(root))
    base = root / "msmt17" / "MSMT17_V2"
    assert [p for p, _ in miss] == [
        str(base / "mask_test_v2"),
        str(base / "list_query.txt"),
        str(base / "list_gallery.txt"),
    ]
    os.makedirs(base / "mask_test_v2")
    (base / "list_query.txt").write_text("")
    assert [p for p, _ in missing_requirements("msmt17_v2_test", str(root))] == [
        str(base / "list_gallery.txt")
    ]
    # CUHK03-NP: either layout satisfies it
    (miss,) = missing_requirements("cuhk03_np_labeled_train", str(root))
    assert miss[0] == " or ".join(
        str(p)
        for p in (
            root / "cuhk03" / "cuhk03-np" / "labeled" / "bounding_box_train",
            root / "cuhk03-np" / "labeled" / "bounding_box_train",
            root / "cuhk03" / "cuhk03_new_protocol_config_labeled.mat",
        )
    )
    os.makedirs(root / "cuhk03-np" / "labeled" / "bounding_box_train")
    assert missing_requirements("cuhk03_np_labeled_train", str(root)) == []


def test_readme_has_a_section_for_every_dataset_family():
    """Each error and check_dataset output names a datasets/README.md section: it exists."""
    import re

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "datasets", "README.md")) as f:
        headings = re.findall(r"^#+ (.*)$", f.read(), flags=re.M)
    for source in SOURCES:
        assert any(source.title in h for h in headings), source.title


def test_cuhk03_np_filelist_entry_naming_a_missing_image(root):
    from tests.data.test_reid_datasets import _cuhk03_mat, _np_config

    _cuhk03_mat(root / "cuhk03" / "cuhk03_release" / "cuhk-03.mat")
    _np_config(root, "detected")
    config = root / "cuhk03" / "cuhk03_new_protocol_config_detected.mat"
    DatasetCatalog.get("cuhk03_np_detected_train")  # extracts the images
    gone = root / "cuhk03" / "images_extracted" / "detected" / "2_001_1_01.png"
    os.remove(gone)
    DatasetCatalog.clear_cache()
    with pytest.raises(MissingDatasetFileError) as e:
        DatasetCatalog.get("cuhk03_np_detected_train")
    msg = str(e.value)
    # 2_001_1_01.png is the third filelist entry (1-based, as the .mat indices)
    assert f"{config} (filelist entry):3: listed image '{gone}' does not exist" in msg
    assert "(1 of 4 listed images are missing)" in msg
    assert msg.endswith(
        "See datasets/README.md (CUHK03); check with: python tools/check_dataset.py cuhk03_np_detected_train"
    )
