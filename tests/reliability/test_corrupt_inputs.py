"""Truncated and corrupt inputs: images, .mat annotations, list files and checkpoints.

Every error must name the file (and the line for text files); ``DATALOADER.SKIP_CORRUPT``
skips unreadable images with a warning; a crash while saving a checkpoint never damages the
previous checkpoint or ``last_checkpoint``, and resuming from a corrupt checkpoint fails
loudly instead of silently starting from scratch.
"""

import io
import logging
import multiprocessing as mp
import os
import signal

import numpy as np
import pytest
import scipy.io
import torch

from reid_plugins.checkpoint import Checkpointer, CheckpointError
from reid_plugins.checkpoint import checkpointer as checkpointer_module
from reid_plugins.config import get_cfg
from reid_plugins.data import (
    DatasetCatalog,
    ImageReadError,
    ReIDDatasetMapper,
    build_reid_test_loader,
    build_reid_train_loader,
    read_image,
)
from reid_plugins.data.datasets.cuhk03 import load_cuhk03, load_cuhk03_np
from reid_plugins.data.datasets.cuhk_sysu import (
    load_cuhk_sysu_gallery,
    load_cuhk_sysu_query,
    load_cuhk_sysu_train,
)
from reid_plugins.data.datasets.msmt17 import load_msmt17
from reid_plugins.data.datasets.prw import load_prw_annotation, load_prw_gallery, load_prw_train
from reid_plugins.data.synthetic_scenes import generate_synthetic_scenes
from tests._testing import (
    ToyClassifier,
    ToyTrainer,
    toy_trainer_cfg,
    write_tiny_image,
)


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_every_truncation_of_an_image_names_the_file(tmp_path, ext):
    good = write_tiny_image(tmp_path / f"good{ext}", seed=1)
    full = read_image(good)
    data = open(good, "rb").read()
    cuts = range(len(data))
    for n in cuts:  # every strict prefix, the empty file included (new files: truncating
        bad = tmp_path / f"bad{n}{ext}"  # one file again and again is slow on some disks)
        bad.write_bytes(data[:n])
        with pytest.raises(ImageReadError) as e:
            read_image(str(bad))
        assert str(bad) in str(e.value) and e.value.filename == str(bad), n
    bad = tmp_path / f"complete{ext}"
    bad.write_bytes(data)  # the complete file still decodes to the same pixels
    assert np.array_equal(read_image(str(bad)), full)
    assert len(cuts) == len(data)


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"\x00" * 64, "decode"),
        (b"GIF89a" + bytes(range(200)), "decode"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 40, "decode"),  # header only
        (b"\xff\xd8\xff\xdb\x00\x43\x00", "truncated"),  # ends inside a segment
    ],
    ids=["missing", "empty", "zeros", "gif-garbage", "jpeg-header-only", "jpeg-cut-segment"],
)
def test_corrupt_image_error_names_file(tmp_path, content, reason):
    path = tmp_path / "person.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as e:
        read_image(str(path))
    assert str(path) in str(e.value)


@pytest.fixture
def reid_warnings(caplog, monkeypatch):
    """``caplog`` capturing the toolbox's warnings even after a ``DefaultTrainer`` was built
    in this process (its ``setup_logger()`` turns off propagation of "reid_plugins")."""
    monkeypatch.setattr(logging.getLogger("reid_plugins"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="reid_plugins"):
        yield caplog


def _register_test_set(name, records):
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])


def _tiny_reid_records(tmp_path, corrupt_index):
    """4 queries and 8 gallery images; image ``corrupt_index`` is truncated."""
    records = []
    for i in range(12):
        path = write_tiny_image(tmp_path / f"{i:02d}.jpg", seed=i)
        records.append(
            {
                "file_name": path,
                "pid": i % 4 + 1,
                "camid": int(i >= 4),
                "is_query": i < 4,
                "dataset": "reliability_corrupt_test",
            }
        )
    data = open(records[corrupt_index]["file_name"], "rb").read()
    with open(records[corrupt_index]["file_name"], "wb") as f:
        f.write(data[: len(data) // 2])
    return records


def _loader_cfg(skip_corrupt, num_workers):
    cfg = get_cfg()
    cfg.INPUT.SIZE_TEST = [32, 16]
    cfg.INPUT.SIZE_TRAIN = [32, 16]
    cfg.TEST.IMS_PER_BATCH = 4
    cfg.DATALOADER.NUM_WORKERS = num_workers
    cfg.DATALOADER.SKIP_CORRUPT = skip_corrupt
    cfg.SEED = 0
    return cfg


@pytest.mark.parametrize("num_workers", [0, 1])
def test_test_loader_raises_naming_the_corrupt_image(tmp_path, num_workers):
    records = _tiny_reid_records(tmp_path, corrupt_index=6)
    _register_test_set("reliability_corrupt_test", records)
    try:
        loader, _ = build_reid_test_loader(
            _loader_cfg(False, num_workers), "reliability_corrupt_test"
        )
        with pytest.raises(ImageReadError) as e:
            for _ in loader:
                pass
        # also through a DataLoader worker process (re-raised in the main process)
        assert records[6]["file_name"] in str(e.value)
    finally:
        DatasetCatalog.remove("reliability_corrupt_test")


def test_skip_corrupt_drops_the_image_with_a_warning(tmp_path, reid_warnings):
    records = _tiny_reid_records(tmp_path, corrupt_index=6)
    _register_test_set("reliability_corrupt_test", records)
    try:
        loader, info = build_reid_test_loader(_loader_cfg(True, 0), "reliability_corrupt_test")
        seen = [x["file_name"] for batch in loader for x in batch]
    finally:
        DatasetCatalog.remove("reliability_corrupt_test")
    expected = [r["file_name"] for i, r in enumerate(records) if i != 6]
    assert seen == expected  # nothing else lost, order kept
    assert loader.collate_fn.num_dropped == 1
    assert any(records[6]["file_name"] in m for m in reid_warnings.messages)
    assert info["num_query"] == 4 and info["num_gallery"] == 8


def test_skip_corrupt_in_the_training_loader(tmp_path, reid_warnings):
    records = []
    for i in range(8):
        path = write_tiny_image(tmp_path / f"t{i}.jpg", seed=i)
        records.append({"file_name": path, "pid": i % 4, "camid": i % 2, "dataset": "x"})
    (tmp_path / "t5.jpg").write_bytes(b"")  # an empty file
    if "reliability_corrupt_train" in DatasetCatalog:
        DatasetCatalog.remove("reliability_corrupt_train")
    DatasetCatalog.register("reliability_corrupt_train", lambda: [dict(r) for r in records])
    cfg = _loader_cfg(True, 0)
    cfg.DATASETS.TRAIN = ["reliability_corrupt_train"]
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.DATALOADER.NUM_INSTANCE = 2
    try:
        loader = build_reid_train_loader(cfg)
        it = iter(loader)
        sizes = [len(next(it)) for _ in range(6)]
        cfg.DATALOADER.SKIP_CORRUPT = False
        strict = iter(build_reid_train_loader(cfg))
        with pytest.raises(ImageReadError, match="t5.jpg"):
            for _ in range(6):
                next(strict)
    finally:
        DatasetCatalog.remove("reliability_corrupt_train")
    # every batch lost exactly the samples of the empty image, and they were counted
    assert sum(8 - s for s in sizes) == loader.num_dropped > 0
    assert all(s >= 8 - 2 for s in sizes)
    assert any("t5.jpg" in m for m in reid_warnings.messages)


def test_mapper_skip_corrupt_returns_none_and_counts(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    mapper = ReIDDatasetMapper(transforms=lambda a: torch.zeros(3, 4, 2), skip_corrupt=True)
    record = {"file_name": str(path), "pid": 1, "camid": 0}
    assert mapper(record) is None and mapper.num_skipped == 1
    assert record == {"file_name": str(path), "pid": 1, "camid": 0}  # input untouched


# ----------------------------------------------------------------------------- .mat files
@pytest.fixture(scope="module")
def scene_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    kw = dict(
        num_train_images=6,
        num_test_images=12,
        num_train_ids=3,
        num_test_ids=3,
        num_cams=2,
        image_size=(48, 64),
        appearances=(2, 3),
        max_labeled_per_image=2,
        unlabeled_per_image=(0, 1),
        progress=False,
    )
    return {
        fmt: generate_synthetic_scenes(str(root), fmt=fmt, **kw) for fmt in ("cuhk_sysu", "prw")
    }


def _corrupt_copy(path, mode):
    """Corrupt ``path`` in place; returns the original bytes."""
    data = open(path, "rb").read()
    if mode == "truncate":
        new = data[: len(data) // 2]
    elif mode == "header":
        new = b"\x00" * 128 + data[128:]
    elif mode == "tail":
        new = data[:-7]
    else:
        new = b""
    with open(path, "wb") as f:
        f.write(new)
    return data


SCENE_MATS = [
    ("cuhk_sysu", "annotation/Images.mat", load_cuhk_sysu_train),
    ("cuhk_sysu", "annotation/pool.mat", load_cuhk_sysu_train),
    ("cuhk_sysu", "annotation/test/train_test/Train.mat", load_cuhk_sysu_train),
    ("cuhk_sysu", "annotation/test/train_test/TestG10.mat", load_cuhk_sysu_query),
    ("cuhk_sysu", "annotation/Images.mat", load_cuhk_sysu_gallery),
    ("prw", "frame_train.mat", load_prw_train),
    ("prw", "frame_test.mat", load_prw_gallery),
]


@pytest.mark.parametrize("mode", ["truncate", "header", "tail", "empty"])
@pytest.mark.parametrize("fmt, rel, loader", SCENE_MATS)
def test_corrupt_scene_mat_names_the_file(scene_roots, fmt, rel, loader, mode):
    root = scene_roots[fmt]
    path = os.path.join(root, rel)
    original = _corrupt_copy(path, mode)
    try:
        with pytest.raises(ValueError) as e:
            loader(root)
        assert path in str(e.value)
    finally:
        with open(path, "wb") as f:
            f.write(original)
    assert len(loader(root)) > 0  # restored: loads again


@pytest.mark.parametrize("mode", ["truncate", "header", "tail", "empty"])
def test_corrupt_prw_annotation_names_the_file(scene_roots, mode):
    root = scene_roots["prw"]
    ann = sorted(os.listdir(os.path.join(root, "annotations")))
    path = os.path.join(root, "annotations", next(a for a in ann if a.endswith(".mat")))
    original = _corrupt_copy(path, mode)
    try:
        with pytest.raises(ValueError, match="Cannot read MATLAB file") as e:
            load_prw_annotation(path)
        assert path in str(e.value)
    finally:
        with open(path, "wb") as f:
            f.write(original)


def _cuhk03_np_config(root):
    """A tiny CUHK03-NP .mat split config with its extracted images."""
    c3 = root / "cuhk03"
    img_dir = c3 / "images_extracted" / "detected"
    img_dir.mkdir(parents=True)
    (c3 / "images_extracted" / ".detected_done").write_text("")
    files = [f"1_{p:03d}_{v}_{i:02d}.png" for p in (1, 2) for v in (1, 2) for i in (1, 6)]
    for n, f in enumerate(files):
        write_tiny_image(img_dir / f, seed=n)
    cfg = c3 / "cuhk03_new_protocol_config_detected.mat"
    scipy.io.savemat(
        cfg,
        {
            "labels": np.array([1, 1, 1, 1, 2, 2, 2, 2]),
            "camId": np.array([1, 1, 2, 2] * 2),
            "filelist": np.array(files, dtype=object),
            "train_idx": np.arange(1, 5),
            "query_idx": np.array([5]),
            "gallery_idx": np.array([7, 8]),
        },
    )
    return str(cfg)


@pytest.mark.parametrize("mode", ["truncate", "header", "tail", "empty"])
def test_corrupt_cuhk03_mat_names_the_file(tmp_path, mode):
    cfg = _cuhk03_np_config(tmp_path)
    recs, _ = load_cuhk03_np(str(tmp_path), "train", "detected")
    assert len(recs) == 4
    _corrupt_copy(cfg, mode)
    with pytest.raises(ValueError) as e:
        load_cuhk03_np(str(tmp_path), "train", "detected")
    assert cfg in str(e.value)
    # the original release file (MATLAB v5 and v7.3/HDF5 variants) is checked too
    release = tmp_path / "cuhk03" / "cuhk03_release" / "cuhk-03.mat"
    release.parent.mkdir()
    for header in (b"MATLAB 5.0 MAT-file" + b" " * 109, b"\x89HDF\r\n\x1a\n"):
        release.write_bytes(header + b"\x00\x01" * 30)
        with pytest.raises(ValueError) as e:
            load_cuhk03(str(tmp_path), "train")
        assert str(release) in str(e.value)


# ----------------------------------------------------------------------------- list files
def _msmt17_tree(root, lines):
    base = root / "msmt17" / "MSMT17_V1"
    for folder in ("train", "test"):
        (base / folder / "0000").mkdir(parents=True)
    write_tiny_image(base / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg", seed=0)
    good = "0000/0000_000_01_0303morning_0015_0.jpg 0\n"
    (base / "list_train.txt").write_text(good + "".join(lines))
    (base / "list_val.txt").write_text("")
    return str(base / "list_train.txt")


@pytest.mark.parametrize(
    "line, message",
    [
        ("0000/0000_001_02_0303morning_0016_0.jpg\n", "expected '<path> <pid>'"),
        ("0000/0000_001_02_0303morning_0016_0.jpg 0 extra\n", "expected '<path> <pid>'"),
        ("0000/0000_001_02_0303morning_0016_0.jpg zero\n", "is not an integer"),
        ("0000/0000_001_2x_0303morning_0016_0.jpg 0\n", "cannot read the camera"),
        ("0000/0000_001_16_0303morning_0016_0.jpg 0\n", "outside 1..15"),
        ("0000/0000_001_02_0303morn", "expected '<path> <pid>'"),  # file cut mid-line
    ],
)
def test_malformed_msmt17_list_names_file_and_line(tmp_path, line, message):
    list_file = _msmt17_tree(tmp_path, ["\n", line])  # line 2 empty (allowed), line 3 bad
    with pytest.raises(ValueError, match=message) as e:
        load_msmt17(str(tmp_path), "train", "v1")
    assert f"{list_file}:3:" in str(e.value)


def test_missing_msmt17_list_names_it(tmp_path):
    list_file = _msmt17_tree(tmp_path, [])
    os.remove(list_file)
    with pytest.raises(FileNotFoundError, match="list_train.txt"):
        load_msmt17(str(tmp_path), "train", "v1")


# ----------------------------------------------------------------------------- checkpoints
def _saved_model(tmp_path, name="model_0000001"):
    torch.manual_seed(0)
    model = ToyClassifier()
    ckpt = Checkpointer(model, str(tmp_path))
    ckpt.save(name)
    return model, ckpt, tmp_path / f"{name}.pth"


def test_every_truncation_of_a_checkpoint_names_the_file(tmp_path):
    _, _, path = _saved_model(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "model_bad.pth"
    cuts = sorted(set(np.linspace(0, len(data) - 1, 40).astype(int).tolist()))
    for n in cuts:
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="model_bad.pth"):
            Checkpointer(ToyClassifier(), str(tmp_path)).load(str(bad))
    flipped = bytearray(data)
    flipped[: len(flipped) // 4] = b"\x00" * (len(flipped) // 4)  # zip header destroyed
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="model_bad.pth"):
        Checkpointer(ToyClassifier(), str(tmp_path)).load(str(bad))
    torch.save([1, 2, 3], bad)  # readable but not a checkpoint
    with pytest.raises(CheckpointError, match="model_bad.pth"):
        Checkpointer(ToyClassifier(), str(tmp_path)).load(str(bad))


def _kill_during_save(save_dir, where, state):
    """Child process: save model_0000002 and SIGKILL itself at ``where``."""
    model = ToyClassifier()
    model.load_state_dict(state)
    ckpt = Checkpointer(model, save_dir)
    real_replace, real_save = os.replace, torch.save

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def partial_save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: buf.tell() // 2])
        f.flush()
        os.fsync(f.fileno())
        die()

    def replace(src, dst):
        if where == f"before rename of {os.path.basename(dst)}":
            die()
        real_replace(src, dst)
        if where == f"after rename of {os.path.basename(dst)}":
            die()

    if where == "inside torch.save":
        torch.save = partial_save
    checkpointer_module.os.replace = replace
    ckpt.save("model_0000002")
    os._exit(0)  # not reached when the kill point is hit


KILL_POINTS = [
    ("inside torch.save", "model_0000001.pth"),
    ("before rename of model_0000002.pth", "model_0000001.pth"),
    ("after rename of model_0000002.pth", "model_0000001.pth"),
    ("before rename of last_checkpoint", "model_0000001.pth"),
    ("after rename of last_checkpoint", "model_0000002.pth"),
]


@pytest.mark.parametrize("where, survivor", KILL_POINTS)
def test_sigkill_while_saving_keeps_a_complete_checkpoint(tmp_path, where, survivor):
    model, ckpt, first = _saved_model(tmp_path)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    new = {k: v + 1 if v.is_floating_point() else v for k, v in old.items()}
    proc = mp.get_context("fork").Process(
        target=_kill_during_save, args=(str(tmp_path), where, new)
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode
    assert (tmp_path / "last_checkpoint").read_text() == survivor
    assert first.exists()
    if where in ("inside torch.save", "before rename of model_0000002.pth"):
        assert not (tmp_path / "model_0000002.pth").exists()
    # resuming loads a complete checkpoint: exactly the old or the new weights
    fresh = ToyClassifier()
    Checkpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    expected = old if survivor == "model_0000001.pth" else new
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, expected[k]), k
    # the only debris a hard kill can leave is a hidden *.tmp file, never a *.pth
    for name in os.listdir(tmp_path):
        if name.endswith(".pth"):
            Checkpointer(ToyClassifier(), str(tmp_path)).load(str(tmp_path / name))
        else:
            assert name in ("last_checkpoint",) or (name.startswith(".") and name.endswith(".tmp"))


def _toy_cfg(out_dir):
    return toy_trainer_cfg(out_dir, seed=3, max_iter=6, checkpoint_period=3, log_period=100)


@pytest.fixture
def trained_dir(tmp_path):
    cfg = _toy_cfg(tmp_path)
    torch.manual_seed(0)
    trainer = ToyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    return cfg, tmp_path


@pytest.mark.parametrize("mode", ["truncate", "header", "tail", "empty"])
def test_resume_from_corrupt_last_checkpoint_fails_loudly(trained_dir, mode):
    cfg, out = trained_dir
    final = out / "model_final.pth"
    _corrupt_copy(str(final), mode)
    corrupt = final.read_bytes()
    trainer = ToyTrainer(cfg)
    with pytest.raises(CheckpointError) as e:
        trainer.resume_or_load(resume=True)
    assert str(final) in str(e.value)
    assert trainer.start_iter == 0 and final.read_bytes() == corrupt  # nothing overwritten


@pytest.mark.parametrize(
    "content, message",
    [
        (b"model_0000009.pth", "does not exist"),
        (b"", "does not exist"),
        (b"\xff\xfe\x00\x81garbage", "is corrupt"),
    ],
)
def test_bad_last_checkpoint_tag_fails_loudly(trained_dir, content, message):
    cfg, out = trained_dir
    (out / "last_checkpoint").write_bytes(content)
    trainer = ToyTrainer(cfg)
    with pytest.raises(CheckpointError, match=message) as e:
        trainer.resume_or_load(resume=True)
    assert str(out / "last_checkpoint") in str(e.value)


def test_resume_without_last_checkpoint_continues_from_the_newest_file(trained_dir):
    cfg, out = trained_dir
    numbered = sorted(n for n in os.listdir(out) if n.startswith("model_0") and n.endswith(".pth"))
    assert numbered, os.listdir(out)
    os.remove(out / "last_checkpoint")
    os.remove(out / "model_final.pth")
    newest_iter = int(numbered[-1][len("model_") : -len(".pth")])
    trainer = ToyTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == newest_iter + 1 > 1


def test_sigkill_debris_is_cleaned_by_the_next_run(tmp_path):
    model, ckpt, _ = _saved_model(tmp_path)
    proc = mp.get_context("fork").Process(
        target=_kill_during_save,
        args=(str(tmp_path), "inside torch.save", model.state_dict()),
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert any(n.endswith(".tmp") for n in os.listdir(tmp_path))
    Checkpointer(ToyClassifier(), str(tmp_path))
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))
