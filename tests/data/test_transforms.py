"""Tests of image reading, ReID transforms and the dataset mapper."""

import copy

import cv2
import numpy as np
import pytest
import torch

from reid_plugins.config import get_cfg
from reid_plugins.data.detection_utils import ImageReadError, check_image_bytes, read_image
from reid_plugins.data.mapper import ReIDDatasetMapper
from reid_plugins.data.transforms import ReIDTransforms, build_reid_transforms


def _random_image(h=32, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _encode(img_rgb, ext, params=()):
    ok, buf = cv2.imencode(ext, cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), list(params))
    assert ok
    return buf.tobytes()


# ----------------------------------------------------------------------------- #
# read_image
# ----------------------------------------------------------------------------- #
def test_read_image_png_roundtrip_rgb_and_bgr(tmp_path):
    img = _random_image(12, 7)
    path = tmp_path / "a.png"
    path.write_bytes(_encode(img, ".png"))
    rgb = read_image(str(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 7, 3)
    np.testing.assert_array_equal(rgb, img)
    np.testing.assert_array_equal(read_image(str(path), format="BGR"), img[:, :, ::-1])
    with pytest.raises(ValueError, match="format"):
        read_image(str(path), format="CMYK")


def test_read_image_missing_empty_and_garbage_name_the_file(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageReadError, match="nope.jpg") as e:
        read_image(str(missing))
    assert isinstance(e.value, OSError) and e.value.filename == str(missing)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg.*empty"):
        read_image(str(empty))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageReadError, match="garbage.png"):
        read_image(str(garbage))


def test_image_read_error_survives_worker_reraise_and_pickle():
    import pickle

    err = ImageReadError("/data/x.jpg", "truncated JPEG")
    again = pickle.loads(pickle.dumps(err))
    assert (again.filename, again.reason, str(again)) == (err.filename, err.reason, str(err))
    # DataLoader workers re-raise as type(e)(formatted traceback): type and file name survive.
    rebuilt = type(err)(f"Caught ImageReadError in DataLoader worker.\n{err}")
    assert isinstance(rebuilt, ImageReadError) and "/data/x.jpg" in str(rebuilt)


@pytest.mark.parametrize(
    "params",
    [(), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 1)],
    ids=["baseline", "progressive", "restart-markers"],
)
def test_truncated_jpeg_detected_at_every_cut(tmp_path, params):
    data = _encode(_random_image(24, 12, seed=3), ".jpg", params)
    assert check_image_bytes(data) is None
    # Every proper prefix is reported (structure walk up to EOI), whatever libjpeg would do.
    for cut in range(2, len(data)):
        assert check_image_bytes(data[:cut]) is not None, cut
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(ImageReadError, match="cut.jpg.*truncated JPEG"):
        read_image(str(path))
    # Bytes appended after the end-of-image marker are tolerated.
    ok = tmp_path / "trailer.jpg"
    ok.write_bytes(data + b"\x00\x00trailing")
    assert read_image(str(ok)).shape == (24, 12, 3)


def test_truncated_png_detected(tmp_path):
    data = _encode(_random_image(10, 6), ".png")
    for cut in (9, len(data) // 2, len(data) - 1):
        assert "truncated PNG" in check_image_bytes(data[:cut])
    path = tmp_path / "cut.png"
    path.write_bytes(data[:-5])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(str(path))


# ----------------------------------------------------------------------------- #
# Transforms
# ----------------------------------------------------------------------------- #
def test_eval_transform_resizes_and_keeps_0_255_range():
    t = ReIDTransforms(size=(32, 16), is_train=False)
    out = t(_random_image(50, 23))
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255 and out.max() > 1  # not scaled to [0, 1]
    # At the target size nothing changes: values are the raw pixels, no normalisation.
    img = _random_image(32, 16, seed=1)
    np.testing.assert_array_equal(t(img).numpy(), img.transpose(2, 0, 1).astype(np.float32))


def test_input_is_not_modified_and_bad_input_rejected():
    img = _random_image()
    before = img.copy()
    ReIDTransforms(size=(32, 16), is_train=True, flip_prob=1.0, padding=3)(img)
    np.testing.assert_array_equal(img, before)
    with pytest.raises(ValueError, match="image"):
        ReIDTransforms(size=(32, 16), is_train=False)(np.zeros((32, 16), np.uint8))
    with pytest.raises(ValueError, match="size"):
        ReIDTransforms(size=(32,), is_train=False)


def test_flip_with_prob_one_mirrors_and_prob_zero_keeps():
    img = _random_image()
    ref = img.transpose(2, 0, 1).astype(np.float32)
    flipped = ReIDTransforms(size=(32, 16), is_train=True, flip_prob=1.0)(img)
    np.testing.assert_array_equal(flipped.numpy(), ref[:, :, ::-1])
    kept = ReIDTransforms(size=(32, 16), is_train=True, flip_prob=0.0)(img)
    np.testing.assert_array_equal(kept.numpy(), ref)


def test_pad_crop_keeps_size_and_is_a_shifted_window():
    torch.manual_seed(0)
    img = _random_image()
    pad = 4
    padded = np.pad(img.transpose(2, 0, 1).astype(np.float32), ((0, 0), (pad, pad), (pad, pad)))
    t = ReIDTransforms(size=(32, 16), is_train=True, padding=pad)
    offsets = set()
    for _ in range(20):
        out = t(img).numpy()
        assert out.shape == (3, 32, 16)
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.array_equal(out, padded[:, dy : dy + 32, dx : dx + 16])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 3  # the crop position is random


def test_random_erasing_fills_a_rectangle_with_the_given_value():
    torch.manual_seed(0)
    img = np.full((32, 16, 3), 7, np.uint8)
    fill = (100.0, 150.0, 200.0)
    t = ReIDTransforms(size=(32, 16), is_train=True, erasing_prob=1.0, erasing_value=fill)
    for _ in range(5):
        out = t(img).numpy()
        erased = np.all(out == np.array(fill, np.float32)[:, None, None], axis=0)
        assert np.all(out[:, ~erased] == 7)  # every other pixel untouched
        ys, xs = np.nonzero(erased)
        assert len(ys) > 0
        box = erased[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert box.all()  # a filled rectangle
        assert 0.02 * 512 * 0.5 <= erased.sum() <= 0.4 * 512 * 1.5


def test_build_from_config_train_and_eval():
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = [32, 16]
    cfg.INPUT.SIZE_TEST = [24, 12]
    img = _random_image(40, 20)
    assert build_reid_transforms(cfg, is_train=False)(img).shape == (3, 24, 12)
    train = build_reid_transforms(cfg, is_train=True)
    assert train(img).shape == (3, 32, 16)
    # Augmentations switched off in the config -> training output equals a plain resize.
    cfg.INPUT.FLIP.ENABLED = False
    cfg.INPUT.PADDING.ENABLED = False
    cfg.INPUT.REA.ENABLED = False
    plain = ReIDTransforms(size=(32, 16), is_train=False)(img)
    torch.testing.assert_close(build_reid_transforms(cfg, is_train=True)(img), plain)
    cfg.INPUT.FLIP.ENABLED = True
    cfg.INPUT.FLIP.PROB = 1.0
    flipped = build_reid_transforms(cfg, is_train=True)(img)
    torch.testing.assert_close(flipped, plain.flip(-1))


# ----------------------------------------------------------------------------- #
# Mapper
# ----------------------------------------------------------------------------- #
def test_mapper_returns_new_dict_and_leaves_record_untouched(tmp_path):
    img = _random_image(20, 10)
    path = tmp_path / "0001_c1_000.png"
    path.write_bytes(_encode(img, ".png"))
    record = {"file_name": str(path), "pid": 3, "camid": 0, "dataset": "x"}
    before = copy.deepcopy(record)
    mapper = ReIDDatasetMapper(transforms=ReIDTransforms(size=(20, 10), is_train=False))
    out = mapper(record)
    assert record == before and out is not record
    assert {k: out[k] for k in record} == record
    np.testing.assert_array_equal(out["image"].numpy(), img.transpose(2, 0, 1))


def test_mapper_corrupt_raises_or_skips_with_warning(tmp_path, caplog):
    bad = tmp_path / "broken_0007.jpg"
    bad.write_bytes(_encode(_random_image(), ".jpg")[:100])
    record = {"file_name": str(bad), "pid": 0, "camid": 0}
    t = ReIDTransforms(size=(32, 16), is_train=False)
    with pytest.raises(ImageReadError, match="broken_0007.jpg"):
        ReIDDatasetMapper(transforms=t)(record)
    mapper = ReIDDatasetMapper(transforms=t, skip_corrupt=True)
    with caplog.at_level("WARNING"):
        assert mapper(record) is None
    assert "broken_0007.jpg" in caplog.text and mapper.num_skipped == 1


def test_mapper_from_config():
    cfg = get_cfg()
    cfg.DATALOADER.SKIP_CORRUPT = True
    mapper = ReIDDatasetMapper.from_config(cfg, is_train=True)
    assert mapper.skip_corrupt and mapper.transforms.is_train
    assert not ReIDDatasetMapper.from_config(cfg, is_train=False).transforms.is_train
