"""Evaluators and metric functions."""

from .distance import GalleryDistance, compute_distance  # noqa: F401
from .evaluator import (  # noqa: F401
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
)
from .faiss_index import (  # noqa: F401
    FaissGalleryIndex,
    evaluate_features_faiss,
    evaluate_retrieved,
)
from .person_search_evaluation import (  # noqa: F401
    PersonSearchEvaluator,
    run_person_search_inference,
)
from .rank import evaluate_features, evaluate_rank  # noqa: F401
from .reid_evaluation import ReIDEvaluator  # noqa: F401
from .rerank import re_ranking  # noqa: F401
from .search_metrics import (  # noqa: F401
    SearchGallery,
    average_precision,
    detection_recall_ap,
    iou_threshold,
    rcp_rescore,
    search_cuhk_sysu,
    search_gallery_curve,
    search_prw,
)
from .tta import FlipTestWrapper, maybe_wrap_flip  # noqa: F401
