"""Issue 15.8: pictures name cameras as the datasets do (1-based) and never cut labels."""

import json

import numpy as np
import pytest

from reid_plugins.data.datasets.common import parse_market_name
from reid_plugins.data.datasets.msmt17 import _camid as msmt17_camid
from reid_plugins.data.datasets.prw import prw_camid
from reid_plugins.visualization import drawing as vis_drawing
from reid_plugins.visualization import rankings as vis_rankings
from reid_plugins.visualization import visualizer as vis

LONG = "0002_c1s1_000451_03_with_a_rather_long_suffix.jpg"


def test_camera_label_is_the_datasets_one_based_name():
    assert [vis.camera_label(c) for c in (0, 1, 14, -1)] == ["c1", "c2", "c15", "c?"]
    # the loaders store 0-based camids; the label gives back the name in the file
    assert vis.camera_label(parse_market_name("0002_c2s1_000451_03.jpg")[1]) == "c2"
    assert vis.camera_label(msmt17_camid("0000_000_05_0303morning_0015_0.jpg", "l", 1)) == "c5"
    assert vis.camera_label(prw_camid("c3s1_012345")) == "c3"


def test_reid_dump_labels_cameras_one_based(tmp_path, monkeypatch):
    dump = {
        "queries": [
            {"query": "q.png", "pid": 5, "camid": 1, "gallery": ["a.png", "b.png"],
             "gallery_pids": [5, 7], "gallery_camids": [0, 2], "distances": [0.1, 0.2],
             "correct": [True, False], "ap": 1.0}
        ]
    }  # fmt: skip
    path = tmp_path / "reid_topk_x.json"
    path.write_text(json.dumps(dump))
    seen = {}

    def fake_draw(query, gallery, distances, correct, **kw):
        seen.update(kw)
        return np.zeros((4, 4, 3), np.uint8)

    monkeypatch.setattr(vis_rankings, "draw_reid_ranking", fake_draw)
    vis.visualize_reid_dump(str(path), str(tmp_path / "out"))
    assert seen["query_label"] == "pid 5 c2"
    assert seen["gallery_labels"] == ["pid 5 c1", "pid 7 c3"]


def test_fit_caption_shrinks_then_wraps_without_losing_characters():
    scale = 0.6
    width = vis_drawing.text_width("short", scale) + 4
    assert vis.fit_caption(["short"], width, scale) == (["short"], scale)  # fits: unchanged
    # fits once the font is smaller: shrunk, not wrapped
    mid = "0002_c1s1_0451"
    w_mid = vis_drawing.text_width(mid, 0.45)
    lines, s = vis.fit_caption([mid], w_mid, scale)
    assert lines == [mid] and 0.45 <= s < scale
    # too long even at the smallest font: wrapped, preferably after a separator
    lines, s = vis.fit_caption([LONG], 76, scale)
    assert s == vis_drawing.MIN_FONT_SCALE
    assert "".join(lines) == LONG and len(lines) > 1
    assert all(vis_drawing.text_width(t, s) <= 76 for t in lines)
    assert all(t[-1] in "_-./ |" for t in lines[:-1])


def _band_right_edge_is_white(img: np.ndarray, tile_w: int, tile_h: int) -> bool:
    """The caption band below the first tile has no text pixels in its last 2 columns."""
    return bool((img[tile_h:, tile_w - 2 : tile_w] == 255).all())


@pytest.mark.parametrize("label", ["q.jpg", LONG])
def test_ranking_captions_are_not_cut(label):
    tile = (160, 80)
    crop = np.full((160, 80, 3), 128, np.uint8)
    img = vis.draw_reid_ranking(crop, [], [], query_label=label, tile_size=tile)
    # draw_reid_ranking pads by 10 px; the query tile has a border
    t = max(2, tile[1] // 20)
    first = img[10:, 10 : 10 + tile[1] + 2 * t]
    assert _band_right_edge_is_white(first, tile[1] + 2 * t, tile[0] + 2 * t)
    short = vis.draw_reid_ranking(crop, [], [], query_label="q.jpg", tile_size=tile)
    if label == LONG:  # wrapped onto more lines: a taller picture
        assert img.shape[0] > short.shape[0]


def test_box_labels_wrap_instead_of_running_off_the_image():
    img = np.zeros((60, 90, 3), np.uint8)
    box = np.array([[40, 40, 80, 58]])

    def label_rows(label):
        out = vis.draw_boxes(img, box, [vis.QUERY], [label])
        # label blocks are moved left of the box (x1 = 40) to fit the image width
        mask = (out[:, :38] == np.array(vis.QUERY, np.uint8)).all(axis=2)
        return int(mask.any(axis=1).sum()), mask

    short_rows, _ = label_rows("0.91 | sim 0.80")
    long_rows, mask = label_rows(LONG)
    assert short_rows > 0
    assert long_rows >= 3 * short_rows  # wrapped onto several lines (4 at the smallest font)
    assert mask[-1].any()  # moved up so that its last line ends inside the 60-px image
