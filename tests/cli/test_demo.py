"""reid_plugins/cli/demo.py (tools/demo.py): person search over a folder and a video with a
tiny fake model honouring the evaluator contract (boxes in original coordinates, query box
rescaled by the model), and ReID ranking of crops with a tiny ReIDBaseline, both through the
command line."""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from reid_plugins.checkpoint import Checkpointer
from reid_plugins.modeling.meta_arch.build import META_ARCH_REGISTRY
from tests._testing import load_tool

BG = 128  # background grey of the synthetic scenes
RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


demo = load_tool("demo")


class DemoFakeSearchModel(nn.Module):
    """Tiny 'person search' model: persons are the non-grey blobs of the (resized) scene.

    Detections: connected components in resized coordinates, mapped back to the original
    image (contract: boxes in ORIGINAL coordinates); feature = mean colour of the blob.
    ``extract_query`` rescales the given original-coordinate box itself, as real models do.
    """

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # something to checkpoint

    @classmethod
    def from_config(cls, cfg):
        return cls()

    @staticmethod
    def _scale(x):
        return x["image"].shape[-1] / x["width"], x["image"].shape[-2] / x["height"]

    def forward(self, inputs):
        out = []
        for x in inputs:
            img = x["image"].permute(1, 2, 0).numpy()
            mask = (np.abs(img - BG).max(axis=2) > 40).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            sx, sy = self._scale(x)
            boxes, feats = [], []
            for i in range(1, n):
                bx, by, bw, bh, area = stats[i]
                if area < 4:
                    continue
                boxes.append([bx / sx, by / sy, (bx + bw) / sx, (by + bh) / sy])
                feats.append(img[by : by + bh, bx : bx + bw].reshape(-1, 3).mean(0) - BG)
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.full((len(boxes),), 0.9),
                    "features": torch.tensor(np.array(feats), dtype=torch.float32).reshape(-1, 3),
                }
            )
        return out

    def extract_query(self, inputs):
        res = []
        for x in inputs:
            sx, sy = self._scale(x)
            b = np.asarray(x["query_box"], dtype=np.float64) * [sx, sy, sx, sy]
            x1, y1, x2, y2 = (
                np.floor(b[:2]).astype(int).tolist() + np.ceil(b[2:]).astype(int).tolist()
            )
            crop = x["image"][:, y1:y2, x1:x2]
            res.append({"query_feature": crop.reshape(3, -1).mean(1) - BG})
        return res


if "DemoFakeSearchModel" not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(DemoFakeSearchModel)


def scene(persons, h=96, w=128):
    img = np.full((h, w, 3), BG, np.uint8)
    for colour, (x1, y1, x2, y2) in persons:
        img[y1:y2, x1:x2] = colour
    return img


# Red person at a different place in each scene; scene 2 has no red person.
SCENES = [
    [(RED, (10, 20, 30, 80)), (BLUE, (70, 10, 90, 70))],
    [(GREEN, (5, 30, 25, 90)), (RED, (90, 20, 112, 88))],
    [(BLUE, (40, 16, 60, 76))],
]


def write_scenes(folder):
    os.makedirs(folder, exist_ok=True)
    for i, persons in enumerate(SCENES):
        cv2.imwrite(
            os.path.join(folder, f"s{i}.png"), cv2.cvtColor(scene(persons), cv2.COLOR_RGB2BGR)
        )


def write_cfg(tmp_path, text, model):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    Checkpointer(model, str(tmp_path), save_to_disk=True).save("model")
    return str(path), str(tmp_path / "model.pth")


SEARCH_YAML = """
MODEL:
  META_ARCHITECTURE: DemoFakeSearchModel
  DEVICE: cpu
INPUT:
  MIN_SIZE_TEST: 48
  MAX_SIZE_TEST: 80
"""


def test_search_demo_folder_cli(tmp_path):
    gallery = str(tmp_path / "scenes")
    write_scenes(gallery)
    query = str(tmp_path / "query.png")  # a scene with the red person at (60, 10, 80, 70)
    cv2.imwrite(
        query,
        cv2.cvtColor(scene([(RED, (60, 10, 80, 70)), (GREEN, (5, 5, 20, 40))]), cv2.COLOR_RGB2BGR),
    )
    cfg, weights = write_cfg(tmp_path, SEARCH_YAML, DemoFakeSearchModel())
    out = str(tmp_path / "out")
    res = demo.main(
        ["search", "--config-file", cfg, "--query", query, "--query-box", "60", "10", "80", "70",
         "--gallery", gallery, "--output", out, "--topk", "3", "--batch-size", "2",
         "MODEL.WEIGHTS", weights]
    )  # fmt: skip
    assert res["num_gallery_images"] == 3 and res["num_detections"] == 5
    ranked = res["ranked"]
    # The two red persons first (cosine 1 up to resize blur), in their ORIGINAL coordinates.
    assert [r["image_id"] for r in ranked[:2]] == ["s0.png", "s1.png"]
    np.testing.assert_allclose(ranked[0]["box"], [10, 20, 30, 80], atol=2.5)
    np.testing.assert_allclose(ranked[1]["box"], [90, 20, 112, 88], atol=2.5)
    assert ranked[0]["similarity"] > 0.99 and ranked[2]["similarity"] < 0.9
    assert [r["similarity"] for r in ranked] == sorted(
        (r["similarity"] for r in ranked), reverse=True
    )
    with open(os.path.join(out, "ranked.json")) as f:
        assert json.load(f)["ranked"] == ranked
    with open(os.path.join(out, "detections.json")) as f:
        dets = json.load(f)["images"]
    assert [len(d["boxes"]) for d in dets] == [2, 2, 1]
    assert sorted(os.listdir(os.path.join(out, "annotated"))) == ["s0.jpg", "s1.jpg", "s2.jpg"]
    png = cv2.imread(os.path.join(out, "ranked.png"))
    assert png is not None and png.shape[1] > 3 * 320  # query + 3 result tiles
    # The best match of s0 is highlighted in blue (QUERY colour) on the annotated scene.
    ann = cv2.cvtColor(cv2.imread(os.path.join(out, "annotated", "s0.jpg")), cv2.COLOR_BGR2RGB)
    assert np.abs(ann[50, 9].astype(int) - (30, 110, 255)).max() < 60  # left edge of the box


def test_search_demo_video_and_crop_query(tmp_path):
    video = str(tmp_path / "v.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for persons in SCENES * 2:  # 6 frames
        writer.write(cv2.cvtColor(scene(persons), cv2.COLOR_RGB2BGR))
    writer.release()
    query = str(tmp_path / "crop.png")  # a cropped red person: no --query-box
    cv2.imwrite(query, cv2.cvtColor(np.full((40, 16, 3), RED, np.uint8), cv2.COLOR_RGB2BGR))
    out = str(tmp_path / "vout")
    res = demo.run_search_demo(
        DemoFakeSearchModel(), query, None, video, out, min_size=48, max_size=80, topk=2,
        frame_stride=2, det_thresh=0.5,
    )  # fmt: skip
    # Frames 0, 2, 4 = scenes 0, 2, 1: red persons in frames 0 and 4.
    assert res["num_gallery_images"] == 3
    assert {r["image_id"] for r in res["ranked"]} == {"frame_000000", "frame_000004"}
    cap = cv2.VideoCapture(os.path.join(out, "annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 3
    assert os.path.exists(os.path.join(out, "ranked.png"))
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        demo.run_search_demo(
            DemoFakeSearchModel(),
            query,
            None,
            str(tmp_path / "x.txt"),
            out,
            min_size=48,
            max_size=80,
        )
    with pytest.raises(ValueError, match="query-box"):
        demo.run_search_demo(
            DemoFakeSearchModel(), query, [0, 0, 99, 99], video, out, min_size=48, max_size=80
        )


REID_YAML = """
MODEL:
  DEVICE: cpu
  BACKBONE:
    DEPTH: 18
    BASE_WIDTH: 8
  HEADS:
    NUM_CLASSES: 4
INPUT:
  SIZE_TEST: [32, 16]
"""


def test_reid_demo_cli(tmp_path):
    from reid_plugins.config import get_cfg
    from reid_plugins.modeling import build_model

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.BASE_WIDTH = 8
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    torch.manual_seed(0)
    model = build_model(cfg)
    cfg_file, weights = write_cfg(tmp_path, REID_YAML, model)
    rng = np.random.default_rng(0)
    gallery = tmp_path / "crops"
    gallery.mkdir()
    for i in range(6):
        img = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
        cv2.imwrite(str(gallery / f"g{i}.png"), img)
    query = str(tmp_path / "q.png")
    cv2.imwrite(query, cv2.imread(str(gallery / "g3.png")))  # the same image as g3
    out = str(tmp_path / "rout")
    res = demo.main(
        ["reid", "--config-file", cfg_file, "--query", query, "--gallery", str(gallery),
         "--output", out, "--topk", "4", "MODEL.WEIGHTS", weights]
    )  # fmt: skip
    ranked = res["ranked"]
    assert len(ranked) == 6 and os.path.basename(ranked[0]["file"]) == "g3.png"
    assert abs(ranked[0]["distance"]) < 1e-5 and ranked[1]["distance"] > 1e-4
    assert [r["distance"] for r in ranked] == sorted(r["distance"] for r in ranked)
    png = cv2.imread(os.path.join(out, "ranked.png"))
    assert png is not None and png.shape[1] > 5 * 80  # query + 4 tiles of width 80
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS"):
        demo.main(
            [
                "reid",
                "--config-file",
                cfg_file,
                "--query",
                query,
                "--gallery",
                str(gallery),
                "--output",
                out,
            ]
        )
