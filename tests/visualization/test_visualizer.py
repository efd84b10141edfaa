"""Visualiser: geometry of the drawings (borders, boxes at the right place and colour),
rendering of the evaluators' dumps, detections, save_features and t-SNE, and the
tools/visualize_results.py subcommands."""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from reid_plugins.evaluation import ReIDEvaluator
from reid_plugins.visualization import visualizer as vis
from tests._testing import load_tool

GAP, T = 10, 4  # draw_reid_ranking: grid gap and border thickness for tile width 80


def solid(colour, h=64, w=32):
    return np.tile(np.array(colour, np.uint8), (h, w, 1))


def write(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


def test_fit_image_maps_points():
    img = np.zeros((20, 40, 3), np.uint8)
    img[5, 30] = 255
    canvas, scale, (ox, oy) = vis.fit_image(img, (40, 40), fill=0)
    assert scale == 1.0 and (ox, oy) == (0, 10)
    assert canvas[5 + oy, 30 + ox].max() == 255 and canvas[:10].max() == 0


def test_reid_ranking_borders_and_tiles():
    colours = [(200, 0, 200), (0, 0, 200), (200, 200, 0)]
    img = vis.draw_reid_ranking(
        solid((0, 200, 200)), [solid(c) for c in colours], [0.1, 0.2, 0.3], [True, False, None]
    )
    cw = 80 + 2 * T  # tile + border
    assert img.shape[1] == GAP + 4 * (cw + GAP)
    expected = [vis.QUERY, vis.CORRECT, vis.WRONG, vis.UNKNOWN]
    for i, border in enumerate(expected):
        x = GAP + i * (cw + GAP)
        assert tuple(img[GAP + 1, x + 1]) == border, i
        inner = (0, 200, 200) if i == 0 else colours[i - 1]
        assert tuple(img[GAP + 80, x + cw // 2]) == inner, i  # centre of the crop
    with pytest.raises(ValueError, match="distances"):
        vis.draw_reid_ranking(solid((0, 0, 0)), [solid((0, 0, 0))], [0.1, 0.2])


def _reid_dump(tmp_path):
    """Images + a real ReIDEvaluator dump: features are 2-D points, pid = colour."""
    palette = {1: (220, 0, 0), 2: (0, 0, 220), 3: (0, 200, 0)}
    recs, feats = [], []
    # queries: pid 1 cam 0 at the pid-1 cluster; pid 2 cam 0 placed nearer to pid 3.
    for i, (pid, x) in enumerate([(1, [1.0, 0.0]), (2, [0.1, 1.0])]):
        recs.append({"file_name": f"q{i}.png", "pid": pid, "camid": 0, "is_query": True})
        feats.append(x)
    gal = [(1, [1.0, 0.1]), (2, [1.0, -0.8]), (3, [0.0, 1.0]), (1, [0.9, 0.3]), (3, [0.2, 1.0])]
    for i, (pid, x) in enumerate(gal):
        recs.append({"file_name": f"g{i}.png", "pid": pid, "camid": 1, "is_query": False})
        feats.append(x)
    for r in recs:
        write(tmp_path / "imgs" / r["file_name"], solid(palette[r["pid"]]))
    ev = ReIDEvaluator(dataset_name="toy", max_rank=5, output_dir=str(tmp_path), topk_dump=3)
    ev.process(recs, [{"feature": torch.tensor(f)} for f in feats])
    ev.evaluate()
    return str(tmp_path / "reid_topk_toy.json")


def test_visualize_reid_dump(tmp_path):
    dump = _reid_dump(tmp_path)
    root = str(tmp_path / "imgs")
    paths = vis.visualize_reid_dump(dump, str(tmp_path / "all"), image_root=root)
    assert [os.path.basename(p) for p in paths] == ["0000_q0_q0.png", "0001_q1_q1.png"]
    # q1 (pid 2) has its match ranked last: it is the worst and the only rank-1 failure.
    worst = vis.visualize_reid_dump(dump, str(tmp_path / "w"), image_root=root, order="worst")
    assert os.path.basename(worst[0]) == "0000_q1_q1.png"
    fails = vis.visualize_reid_dump(dump, str(tmp_path / "f"), image_root=root, failures_only=True)
    assert [os.path.basename(p) for p in fails] == ["0000_q1_q1.png"]
    img = cv2.cvtColor(cv2.imread(fails[0]), cv2.COLOR_BGR2RGB)
    title_h = img.shape[0] - vis.draw_reid_ranking(solid((0, 0, 0)), [], []).shape[0]
    x1 = GAP + (80 + 2 * T) + GAP  # first gallery tile
    assert tuple(img[title_h + GAP + 1, x1 + 1]) == vis.WRONG
    assert (
        len(vis.visualize_reid_dump(dump, str(tmp_path / "k"), image_root=root, max_queries=1)) == 1
    )
    with pytest.raises(OSError, match="nowhere.q0.png"):  # missing images name the file
        vis.visualize_reid_dump(dump, str(tmp_path / "x"), image_root=str(tmp_path / "nowhere"))


def test_search_result_draws_boxes_at_scaled_positions():
    scene = solid((90, 90, 90), h=100, w=200)
    gal = [{"image": scene, "box": [150, 10, 190, 90], "score": 0.8, "correct": False}]
    img = vis.draw_search_result(scene, [10, 10, 50, 90], gal, tile_size=(240, 320), ncols=2)
    # scale 1.6, offsets (0, 40) inside a 3-pixel border, grid gap 6.
    y0, x0 = 6 + 3, 6 + 3
    assert tuple(img[y0 + 40 + 16 + 50, x0 + 16]) == vis.QUERY  # left edge of the query box
    xg = 6 + (320 + 6) + 6 + 3
    assert tuple(img[y0 + 40 + 16 + 50, xg + 240]) == vis.WRONG  # left edge of the match
    # Zoomed inset on the side away from the box: top-left for the right-hand match.
    assert tuple(img[y0 + 1, xg + 1]) == vis.WRONG and tuple(img[y0 + 1, x0 + 319]) == vis.QUERY


def test_visualize_search_dump_and_resolver(tmp_path):
    root = tmp_path / "scenes"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write(root / name, solid((100, 120, 140), h=60, w=80))
    top = [
        {"image_id": "b.jpg", "box": [5, 5, 30, 50], "score": 0.9, "correct": True},
        {"image_id": "c.jpg", "box": [40, 5, 70, 55], "score": 0.5, "correct": False},
    ]
    dump = {
        "settings": {"dataset": None, "query_dataset": None},
        "queries": [
            {"query_index": 0, "query_image_id": "a.jpg", "query_box": [1, 1, 20, 40],
             "query_pid": 7, "ap": 1.0, "top": top},
            {"query_index": 1, "query_image_id": "b.jpg", "query_box": [1, 1, 20, 40],
             "query_pid": 8, "ap": 0.2, "top": top[::-1]},
        ],
    }  # fmt: skip
    path = tmp_path / "search_results_prw.json"
    path.write_text(json.dumps(dump))
    resolve = vis.make_image_resolver(str(root))
    out = vis.visualize_search_dump(str(path), str(tmp_path / "o"), resolve=resolve, topk=2)
    assert len(out) == 2 and all(cv2.imread(p) is not None for p in out)
    fails = vis.visualize_search_dump(
        str(path), str(tmp_path / "f"), resolve=resolve, failures_only=True
    )
    assert [os.path.basename(p) for p in fails] == ["0000_q1_b.png"]
    with pytest.raises(FileNotFoundError, match="zz.jpg"):
        resolve("zz.jpg")
    with pytest.raises(KeyError, match="queries"):
        (tmp_path / "bad.json").write_text("{}")
        vis.visualize_search_dump(str(tmp_path / "bad.json"), str(tmp_path), resolve=resolve)


def test_draw_detections_threshold_and_pid_colours(tmp_path):
    bg = solid((255, 255, 255), h=60, w=80)
    boxes = [[5, 20, 25, 55], [40, 20, 60, 55], [68, 20, 78, 55]]
    img = vis.draw_detections(bg, boxes, [0.9, 0.95, 0.2], [3, -1, 4], score_thresh=0.5)
    assert tuple(img[40, 5]) == vis._pid_colour(3) and tuple(img[40, 40]) == vis.NEUTRAL
    assert tuple(img[40, 68]) == (255, 255, 255)  # score 0.2 < 0.5: not drawn
    assert vis._pid_colour(3) != vis._pid_colour(4)
    with pytest.raises(ValueError, match="3 boxes but 2 scores"):
        vis.draw_detections(bg, boxes, [0.9, 0.1])
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"images": [{"image_id": "x.jpg", "boxes": boxes}]}))
    assert vis.load_detections(str(p))[0]["image_id"] == "x.jpg"
    p.write_text(json.dumps([{"boxes": boxes}]))
    with pytest.raises(KeyError, match="entry 0"):
        vis.load_detections(str(p))


class MeanColour(nn.Module):
    def forward(self, batch):
        x = torch.stack([b["image"] for b in batch]).mean((2, 3)) / 255
        return [{"feature": f} for f in x]


def _clustered_batches():
    """Two domains x 3 identities x 4 images; identity = distinct colour + tiny noise."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for d, dom in enumerate(("domA", "domB")):
        batch = []
        for pid in range(1, 4):
            base = torch.tensor([pid * 60.0, d * 200.0 + 20, 100.0])
            for _ in range(4):
                img = base.view(3, 1, 1) + torch.randn(3, 8, 4, generator=g)
                batch.append({"image": img, "pid": pid, "camid": 0, "dataset": dom})
        batches.append(batch)
    return batches


def test_save_features_and_tsne(tmp_path):
    path = str(tmp_path / "f.npz")
    arrays = vis.save_features(MeanColour(), _clustered_batches(), path)
    data = vis.load_features(path)
    assert data["features"].shape == (24, 3) and list(data["domains"][:1]) == ["domA"]
    np.testing.assert_array_equal(data["pids"], arrays["pids"])
    pts = vis.tsne_embed(data["features"], perplexity=5)
    d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    same_id = (data["pids"][:, None] == data["pids"][None]) & (
        data["domains"][:, None] == data["domains"][None]
    )
    assert d[same_id].mean() < 0.5 * d[~same_id].mean()  # identities stay clustered
    out = vis.visualize_tsne(path, str(tmp_path / "t"), num_ids=4, perplexity=5)
    assert [os.path.basename(p) for p in out] == ["tsne_domain.png", "tsne_identity.png"]
    png = cv2.imread(out[1])
    assert png is not None and png.shape[0] > 300
    with pytest.raises(FileNotFoundError, match="save_features"):
        vis.load_features(str(tmp_path / "missing.npz"))


def test_visualize_results_cli(tmp_path):
    tool = load_tool("visualize_results")
    dump = _reid_dump(tmp_path)
    out = tool.main(
        ["reid", "--json", dump, "--output", str(tmp_path / "r"), "--image-root",
         str(tmp_path / "imgs"), "--topk", "2", "--max-queries", "-1"]
    )  # fmt: skip
    assert len(out) == 2
    scene = write(tmp_path / "s.png", solid((255, 255, 255), h=60, w=80))
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{"file_name": scene, "boxes": [[5, 5, 30, 50]], "scores": [0.9]}]))
    out = tool.main(["detections", "--json", str(det), "--output", str(tmp_path / "d")])
    assert tuple(cv2.imread(out[0])[20, 5][::-1]) == vis.CORRECT
    feats = str(tmp_path / "f.npz")
    vis.save_features(MeanColour(), _clustered_batches(), feats)
    out = tool.main(
        ["tsne", "--features", feats, "--output", str(tmp_path / "t"), "--perplexity", "5"]
    )
    assert len(out) == 2
