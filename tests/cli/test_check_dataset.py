"""reid_plugins/cli/check_dataset.py (tools/check_dataset.py): the statistics table of a
dataset in place, or what is missing (issue 15.6); train_net without data names the missing
file, README and tool."""

import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_plugins.data.datasets.errors import MissingDatasetFileError
from tests._testing import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tool():
    return load_tool("check_dataset")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("REID_DATASETS", str(tmp_path))
    return tmp_path


def _img(path, h=8, w=4):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def _market(root):
    base = root / "market1501" / "Market-1501-v15.09.15"
    files = {
        # 2 ids, 3 images, cameras c1 c2 c3 (+ a junk image that is dropped)
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
                               "0007_c3s1_000200_02.jpg", "-1_c1s1_000001_00.jpg"],
        "query": ["0003_c1s1_000010_00.jpg"],
        "bounding_box_test": ["0003_c4s1_000012_01.jpg", "0000_c5s1_000060_00.jpg"],
    }  # fmt: skip
    for folder, names in files.items():
        for n in names:
            _img(base / folder / n)
    return base


def test_missing_dataset_lists_every_expected_path_and_source(tool, root, capsys):
    assert tool.main(["market1501_test", "prw_query"]) == 1
    out = capsys.readouterr().out
    base = root / "market1501" / "Market-1501-v15.09.15"
    assert f"missing: {base / 'bounding_box_test'}   (Market-1501 bounding_box_test folder)" in out
    assert f"missing: {base / 'query'}   (Market-1501 query folder)" in out
    assert "get: Market-1501 (Zheng et al." in out and "Market-1501-v15.09.15.zip" in out
    assert "layout: datasets/README.md, section 'Market-1501'" in out
    for rel in ("prw/frames", "prw/annotations", "prw/query_info.txt"):
        assert f"missing: {root / rel}" in out
    assert "PRW-v16.04.20" in out


def test_reid_statistics_table(tool, root, capsys):
    _market(root)
    assert tool.main(["market1501_train", "market1501_test"]) == 0
    out = capsys.readouterr().out
    lines = [ln.replace(" ", "") for ln in out.splitlines()]
    assert "|subset|ids|images|cameras|" in lines
    assert "|train|2|3|3|" in lines
    assert "|query|1|1|1|" in lines
    assert "|gallery|1|2|2|(incl.1distractors)" in lines


def test_scene_statistics_table_with_queries(tool, root, capsys):
    prw = root / "prw"
    frames = ["c1s1_000001", "c2s1_000002"]
    for f in frames:
        _img(prw / "frames" / f"{f}.jpg", 20, 30)
        os.makedirs(prw / "annotations", exist_ok=True)
        # two persons: id 5 and an unlabelled one (-2)
        rows = np.array([[5, 1, 1, 4, 8], [-2, 10, 2, 4, 8]], dtype=np.float64)
        scipy.io.savemat(prw / "annotations" / f"{f}.jpg.mat", {"box_new": rows})
    (prw / "query_info.txt").write_text("5 1 1 4 8 c1s1_000001\n")
    cell = np.empty((2, 1), dtype=object)
    cell[:, 0] = frames
    scipy.io.savemat(prw / "frame_test.mat", {"img_index_test": cell})
    assert tool.main(["prw_gallery", "prw_query"]) == 0
    lines = [ln.replace(" ", "") for ln in capsys.readouterr().out.splitlines()]
    assert "|split|scenes|boxes|labelledboxes|ids|cameras|queries|" in lines
    assert "|prw_gallery|2|4|2|1|2|-|" in lines
    assert "|prw_query|1|1|1|1|1|1|" in lines


def test_list_naming_a_missing_image_is_one_line(tool, root, capsys):
    base = root / "msmt17" / "MSMT17_V1"
    _img(base / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg")
    (base / "list_train.txt").write_text(
        "0000/0000_000_01_0303morning_0015_0.jpg 0\n0001/0001_000_02_0303morning_0016_0.jpg 1\n"
    )
    (base / "list_val.txt").write_text("")
    assert tool.main(["msmt17_v1_train"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("'msmt17_v1_train': Dataset 'msmt17_v1_train': ")
    assert f"{base / 'list_train.txt'}:2: listed image" in out[1]
    assert len(out) == 2


def test_unknown_name(tool, root, capsys):
    assert tool.main(["nope", "market1501_train"]) == 2
    assert capsys.readouterr().out.startswith("Not a registered dataset: nope. Registered: ")


def test_train_net_without_prw_names_file_readme_and_tool(root):
    """With no data, ``train_net.py --config-file projects/tdn/prw.yaml`` fails on the
    dataset (before any weights check) with the one-line message the CLI prints."""
    train_net = load_tool("train_net")
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", os.path.join(REPO, "projects/tdn/prw.yaml"), "MODEL.DEVICE", "cpu",
         "OUTPUT_DIR", str(root / "out")]
    )  # fmt: skip
    with pytest.raises(MissingDatasetFileError) as e:
        train_net.main(args)
    assert str(e.value) == (
        f"Dataset 'prw_train': expected annotation file '{root / 'prw' / 'frame_train.mat'}' "
        f"does not exist (datasets are read under $REID_DATASETS, now '{root}'). See "
        "datasets/README.md (PRW); check with: python tools/check_dataset.py prw_train"
    )


def test_all_lists_every_registered_name(tool, root, capsys):
    _market(root)
    assert tool.main(["--all"]) == 1  # most datasets are missing
    lines = capsys.readouterr().out.splitlines()
    by_name = {ln.split()[0]: ln for ln in lines}
    from reid_plugins.data.catalog import DatasetCatalog

    assert set(by_name) == set(DatasetCatalog.list())
    assert by_name["market1501_train"].split()[1:] == ["ok,", "3", "records"]
    assert by_name["market1501_test"].split()[1:] == ["ok,", "3", "records"]
    assert f"MISSING {root / 'prw' / 'frames'} (+2 more)" in by_name["prw_train"]
    assert "generated on first use" in by_name["synthetic_reid_synA_train"]
