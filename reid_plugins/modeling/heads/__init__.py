"""Heads (necks, poolings, classifiers)."""

from .embedding_head import (  # noqa: F401
    REID_HEADS_REGISTRY,
    EmbeddingHead,
    GeneralizedMeanPooling,
    GhostBatchNorm1d,
    build_reid_head,
)
