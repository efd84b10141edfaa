"""Visualisation of ReID / person-search results from the evaluators' JSON dumps (no
re-inference): ranked lists, person-search results, detections and t-SNE of features.

All drawing functions take and return RGB ``uint8`` arrays ``(H, W, 3)``; :func:`save_png`
writes them. Colours: query = blue, correct = green, wrong = red, unknown correctness = orange,
unlabelled person = grey.

* ReID: :func:`draw_reid_ranking` (query + top-k gallery crops, green/red borders, distances);
  :func:`visualize_reid_dump` renders ``reid_topk_<dataset>.json`` of
  :class:`~reid_plugins.evaluation.ReIDEvaluator`.
* Person search: :func:`draw_search_result` (query scene with its box + top-k gallery scenes
  with the matched box and a zoomed inset, as TDN Fig. 7-8); :func:`visualize_search_dump`
  renders ``search_results_<protocol>.json`` of
  :class:`~reid_plugins.evaluation.PersonSearchEvaluator`.
* Detections: :func:`draw_detections` (boxes, scores, pids) and :func:`load_detections`.
* Features: :func:`save_features` (run a model over a loader, write an ``.npz``),
  :func:`tsne_embed` and :func:`visualize_tsne` (t-SNE coloured by domain and by identity,
  as M3L Fig. 5 / Fig. A; needs scikit-learn).

The code lives in :mod:`~reid_plugins.visualization.drawing` (colours, drawing primitives and
detections), :mod:`~reid_plugins.visualization.rankings` (ReID and person-search rankings from the
dumps) and :mod:`~reid_plugins.visualization.features` (features and t-SNE); this module
re-exports their public names.
"""

from __future__ import annotations

from . import drawing as vis_drawing
from .drawing import (  # noqa: F401  (re-exported)
    CORRECT,
    NEUTRAL,
    QUERY,
    UNKNOWN,
    WRONG,
    camera_label,
    draw_boxes,
    draw_detections,
    fit_caption,
    fit_image,
    load_detections,
    load_rgb,
    make_grid,
    save_png,
)
from .features import (  # noqa: F401  (re-exported)
    load_features,
    plot_embedding,
    save_features,
    tsne_embed,
    visualize_tsne,
)
from .rankings import (  # noqa: F401  (re-exported)
    draw_reid_ranking,
    draw_search_result,
    make_image_resolver,
    visualize_reid_dump,
    visualize_search_dump,
)

ImageLike = vis_drawing.ImageLike  # type alias of the drawing API (a path or an RGB array)
_pid_colour = vis_drawing._pid_colour  # pid -> box colour of draw_detections (used by tests)

__all__ = [
    "CORRECT",
    "WRONG",
    "QUERY",
    "NEUTRAL",
    "UNKNOWN",
    "camera_label",
    "fit_caption",
    "load_rgb",
    "save_png",
    "fit_image",
    "make_grid",
    "draw_boxes",
    "draw_reid_ranking",
    "visualize_reid_dump",
    "draw_search_result",
    "visualize_search_dump",
    "make_image_resolver",
    "draw_detections",
    "load_detections",
    "save_features",
    "load_features",
    "tsne_embed",
    "plot_embedding",
    "visualize_tsne",
]
