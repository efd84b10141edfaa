"""``ReIDBaseline``: backbone + GAP + BNNeck with CE / triplet / memory losses."""

from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..backbone import Backbone, build_backbone
from ..heads import build_reid_head
from ..losses import CrossEntropyLoss, MemoryLoss, TripletLoss, extract_and_initialize
from .build import META_ARCH_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["ReIDBaseline", "Batch"]

Batch = List[Dict]


@META_ARCH_REGISTRY.register()
class ReIDBaseline(nn.Module):
    """The shared ReID model: backbone -> pooling -> BNNeck, trained with loss modules.

    Training input: a batch ``list[dict]`` (each with ``"image"`` CxHxW 0-255 and ``"pid"``),
    or, for multi-source training, a list with one such batch per domain (records carry
    ``"domain"`` and ``"domain_pid"``). Each domain's batch is forwarded separately (BN
    statistics are never mixed across domains) and each loss is averaged over domains.

    Losses (each optional, an ``nn.Module``):

    * ``loss_cls``: cross-entropy (label smoothing) of the classifier over global pids, on the
      post-BN feature;
    * ``loss_triplet``: batch-hard triplet on the pre-BN feature, per domain batch;
    * ``loss_memory``: memory-based identification loss (M3L Eq. 3) against the domain's
      memory, on the post-BN feature. The memory rows of the batch identities are
      momentum-updated (Eq. 2) right after the loss is computed, from the same detached
      features; since memories are not parameters this equals updating after the optimizer
      step. Memories are initialised before training by :meth:`initialize_from_data`
      (called by the trainer's ``DataInitHook``).

    Inference returns ``[{"feature": L2-normalised post-BN feature}]`` per input.

    Args:
        backbone: returns ``{in_feature: map}``.
        head: maps the feature map to ``{"pre_bn", "post_bn", "logits"?}``.
        pixel_mean, pixel_std: per-channel normalisation of the 0-255 input.
        ce_loss, triplet_loss, memory_loss: loss modules or None (disabled).
        in_feature: backbone output used by the head.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        ce_loss: Optional[nn.Module] = None,
        triplet_loss: Optional[nn.Module] = None,
        memory_loss: Optional[MemoryLoss] = None,
        in_feature: str = "res5",
    ) -> None:
        super().__init__()
        if ce_loss is not None and getattr(head, "num_classes", 0) == 0:
            raise ValueError(
                "Cross-entropy loss enabled but the head has no classifier "
                "(MODEL.HEADS.CLS_LAYER / NUM_CLASSES)"
            )
        self._init_network(backbone, head, pixel_mean, pixel_std, in_feature)
        self.ce_loss = ce_loss
        self.triplet_loss = triplet_loss
        self.memory_loss = memory_loss

    def _init_network(
        self,
        backbone: Backbone,
        head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        in_feature: str,
    ) -> None:
        """Attach what every ReID model built on this class shares: ``backbone`` and ``head``
        (registered in that order, before any loss module), the backbone output the head
        reads, and the input normalisation as non-persistent buffers."""
        self.backbone = backbone
        self.head = head
        self.in_feature = in_feature
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @staticmethod
    def _backbone_from_config(cfg) -> Tuple[Backbone, str, int]:
        """``(backbone, in_feature, feat_dim)``: the backbone of ``MODEL.BACKBONE``, its last
        ``OUT_FEATURES`` entry (read by the head) and that output's channels."""
        backbone = build_backbone(cfg)
        in_feature = cfg.MODEL.BACKBONE.OUT_FEATURES[-1]
        return backbone, in_feature, backbone.output_shape()[in_feature].channels

    @classmethod
    def from_config(
        cls, cfg, num_pids_per_domain: Optional[Sequence[int]] = None
    ) -> "ReIDBaseline":
        """Build from ``MODEL.{BACKBONE, HEADS, LOSSES}``.

        Args:
            num_pids_per_domain: identities of each training set (from the trainer). The
                classifier has ``MODEL.HEADS.NUM_CLASSES`` outputs when > 0, else their sum;
                the memory loss one memory per set. None = inference model: no classifier
                (unless ``NUM_CLASSES`` > 0) and no memory.
        """
        backbone, in_feature, feat_dim = cls._backbone_from_config(cfg)
        losses = cfg.MODEL.LOSSES
        num_classes = int(cfg.MODEL.HEADS.NUM_CLASSES)
        if not losses.CE.ENABLED and num_classes == 0:
            num_classes = 0
        elif num_classes == 0 and num_pids_per_domain is not None:
            num_classes = sum(int(n) for n in num_pids_per_domain)
        head = build_reid_head(cfg, feat_dim=feat_dim, num_classes=num_classes)
        memory = None
        if losses.MEMORY.ENABLED and num_pids_per_domain is not None:
            memory = MemoryLoss.from_config(
                cfg, num_pids_per_domain=num_pids_per_domain, feat_dim=feat_dim
            )
        has_classifier = num_classes > 0
        return cls(
            backbone=backbone,
            head=head,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            ce_loss=(
                CrossEntropyLoss.from_config(cfg) if losses.CE.ENABLED and has_classifier else None
            ),
            triplet_loss=TripletLoss.from_config(cfg) if losses.TRIPLET.ENABLED else None,
            memory_loss=memory,
            in_feature=in_feature,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ helpers
    def preprocess_image(self, batch: Batch) -> torch.Tensor:
        """Stack ``"image"`` tensors, move to the device and normalise (a new tensor)."""
        images = torch.stack([b["image"] for b in batch]).to(self.device, non_blocking=True)
        return (images.float() - self.pixel_mean) / self.pixel_std

    def extract(self, batch: Batch) -> Dict[str, torch.Tensor]:
        """Backbone + head outputs for a batch (the head's dict)."""
        feats = self.backbone(self.preprocess_image(batch))
        if self.in_feature not in feats:
            raise KeyError(
                f"Backbone returned {sorted(feats)}, but the head needs "
                f"'{self.in_feature}' (MODEL.BACKBONE.OUT_FEATURES)"
            )
        return self.head(feats[self.in_feature])

    def _targets(self, batch: Batch, key: str) -> torch.Tensor:
        return torch.as_tensor([int(b[key]) for b in batch], device=self.device)

    def _domain_pids(self, batch: Batch) -> torch.Tensor:
        """Per-domain pids of the batch (``"domain_pid"``; ``"pid"`` for a single source)."""
        return self._targets(batch, "domain_pid" if "domain_pid" in batch[0] else "pid")

    @staticmethod
    def _single_domain(batch: Batch, needed_by: str) -> int:
        """The ``"domain"`` (default 0) shared by all records of ``batch``.

        Raises:
            ValueError: the batch mixes domains; the message says that ``needed_by`` needs
                one domain per batch.
        """
        domain = int(batch[0].get("domain", 0))
        if any(int(b.get("domain", 0)) != domain for b in batch):
            raise ValueError(
                f"A training batch mixes domains; {needed_by} needs one domain per batch "
                "(DATALOADER.MULTI_SOURCE: True)"
            )
        return domain

    @staticmethod
    def split_domains(batched_inputs: Union[Batch, List[Batch]]) -> List[Batch]:
        """A list of per-domain batches (a single batch becomes a one-element list)."""
        if batched_inputs and isinstance(batched_inputs[0], dict):
            return [batched_inputs]  # type: ignore[list-item]
        return list(batched_inputs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        return self._mean_domain_losses(self.split_domains(batched_inputs))

    def _mean_domain_losses(self, domains: List[Batch], **kwargs) -> Dict[str, torch.Tensor]:
        """Each loss of :meth:`domain_losses` (called with ``kwargs``) averaged over the
        per-domain batches ``domains``."""
        totals: Dict[str, torch.Tensor] = {}
        for batch in domains:
            for k, v in self.domain_losses(batch, **kwargs).items():
                totals[k] = totals.get(k, 0.0) + v / len(domains)
        return totals

    def domain_losses(self, batch: Batch) -> Dict[str, torch.Tensor]:
        """All enabled losses on one domain's batch (no averaging)."""
        out = self.extract(batch)
        losses: Dict[str, torch.Tensor] = {}
        if self.ce_loss is not None:
            losses["loss_cls"] = self.ce_loss(out["logits"], self._targets(batch, "pid"))
        if self.triplet_loss is not None:
            losses["loss_triplet"] = self.triplet_loss(out["pre_bn"], self._targets(batch, "pid"))
        if self.memory_loss is not None:
            domain = self._single_domain(batch, "the memory loss")
            pids = self._domain_pids(batch)
            losses["loss_memory"] = self.memory_loss(out["post_bn"], pids, domain)
            self.memory_loss.update(out["post_bn"].detach(), pids, domain)
        if not losses:
            raise RuntimeError(
                f"{type(self).__name__} has no training loss: it was built for inference "
                "(build_model(cfg) without num_pids_per_domain), or MODEL.LOSSES enables none"
            )
        return losses

    def inference(self, batched_inputs: Batch) -> List[Dict[str, torch.Tensor]]:
        """``[{"feature": L2-normalised post-BN feature (C,)}]`` per input."""
        feats = nn.functional.normalize(self.extract(batched_inputs)["post_bn"], dim=1)
        return [{"feature": f} for f in feats]

    def initialize_from_data(self, loaders_fn: Callable[[], Sequence[Iterable]]) -> None:
        """Fill the per-domain memories with the mean feature of each identity, extracted in
        eval mode from ``loaders_fn()`` (one finite loader per domain, built only if needed).

        Nothing to do without a memory loss, or when every memory is already initialised
        (restored by ``--resume``: memories and their flags are checkpointed buffers).
        """
        memory = self.memory_loss
        if memory is None:
            return
        if all(memory.is_initialized(d) for d in range(memory.num_domains)):
            logger.info("Memories already initialised (resumed); skipping feature extraction")
            return
        logger.info("Initialising %d domain memories by feature extraction", memory.num_domains)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                extract_and_initialize(memory, self.memory_features, loaders_fn())
        finally:
            self.train(was_training)

    @torch.no_grad()
    def memory_features(self, batch: Batch) -> torch.Tensor:
        """Features used to initialise the memories (post-BN, eval mode chosen by caller)."""
        return self.extract(batch)["post_bn"]
