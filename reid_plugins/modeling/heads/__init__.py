"""Heads (necks, poolings, classifiers)."""

from .embedding_head import (  # noqa: F401
    REID_HEADS_REGISTRY,
    EmbeddingHead,
    GeneralizedMeanPooling,
    GhostBatchNorm1d,
    build_reid_head,
)
from .metabn import MetaBatchNorm1d, MetaBNHead  # noqa: F401,E402
from .metric_net import MetricNet, mine_pairs, pair_features, pair_identity_keys  # noqa: F401
