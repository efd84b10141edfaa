"""``GMN``: Generalizable Metric Network (Qi et al., arXiv 2306.11991).

The shared ReID model (backbone -> GAP -> BNNeck, CE + triplet) plus a metric network
(M-Net) trained on sample-pair features ``f_sp = (p - q)^2`` of L2-normalised post-BN
features of pairs mined from each P x K batch, with Dropout-based Perturbation (DP) and the
Pair-Identity Centre (PIC) loss:

    L = L_cls + L_tri + L_gmn + lambda * L_pic.

At test time :meth:`GMN.pairwise_distance` scores query-gallery pairs with M-Net (all pairs or
the top-k of the instance ranking) and fuses the result with the instance distance; the
trainer hands it to :class:`~reid_plugins.evaluation.ReIDEvaluator` as ``pairwise_fn``.
Choices that the paper does not pin down are documented in ``projects/gmn/README.md``.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reid_plugins.modeling.backbone import Backbone
from reid_plugins.modeling.meta_arch.baseline import Batch, ReIDBaseline
from reid_plugins.modeling.meta_arch.build import META_ARCH_REGISTRY

from .metric_net import (
    NEGATIVE_MINING_MODES,
    MetricNet,
    mine_pairs,
    pair_features,
    pair_identity_keys,
)
from .pair_bce import PairBCELoss
from .pic import PairIdentityCenterLoss

__all__ = ["GMN", "fused_pairwise_distance", "instance_distance"]

logger = logging.getLogger(__name__)


def instance_distance(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``(1 - cos(q, g)) / 2`` in ``[0, 1]`` (= ``||q_n - g_n||^2 / 4`` of the normalised
    features), ``(N_q, N_g)``."""
    return _half_cosine_distance(F.normalize(q, dim=1), F.normalize(g, dim=1))


def _half_cosine_distance(qn: torch.Tensor, gn: torch.Tensor) -> torch.Tensor:
    return torch.mm(qn, gn.t()).neg_().add_(1.0).mul_(0.5).clamp_(0.0, 1.0)


@torch.no_grad()
def fused_pairwise_distance(
    metric_net: MetricNet,
    q: torch.Tensor,
    g: torch.Tensor,
    *,
    topk: int = 0,
    fusion_weight: float = 0.5,
    pair_chunk: int = 16384,
) -> torch.Tensor:
    """GMN's test-time distance (see :meth:`GMN.pairwise_distance`), with M-Net's eval-mode
    scores. Besides M-Net's pair-chunk buffers it allocates two ``(N_q, N_g)`` float32
    matrices (full mode) or one plus ``N_q x k`` ones (top-k mode)."""
    q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    d_inst = _half_cosine_distance(q, g)
    w = float(fusion_weight)
    k = int(topk)
    if k <= 0 or k >= g.shape[0]:
        d_m = metric_net.score_matrix(q, g, pair_chunk).neg_().sigmoid_()  # 1 - sigmoid(x)
        return d_inst.mul_(1.0 - w).add_(d_m, alpha=w)
    vals, idx = d_inst.topk(k, dim=1, largest=False)
    d_m = metric_net.score_topk(q, g, idx, pair_chunk).neg_().sigmoid_()
    return d_inst.scatter_(1, idx, vals.mul_(1.0 - w).add_(d_m, alpha=w).sub_(2.0))


@META_ARCH_REGISTRY.register()
class GMN(ReIDBaseline):
    """Shared ReID model + M-Net on sample-pair features (see the module docstring).

    Training input/outputs as :class:`ReIDBaseline` (a batch, or a list of per-domain batches
    whose losses are averaged over domains; pairs are mined inside each batch only). Loss
    keys: ``loss_cls``, ``loss_triplet``, ``loss_gmn`` (pair BCE), ``loss_pic``. Inference
    returns ``[{"feature": L2-normalised post-BN feature}]``.

    Args:
        backbone, head, pixel_mean, pixel_std, ce_loss, triplet_loss, in_feature: as
            :class:`ReIDBaseline` (no memory loss).
        metric_net: the M-Net, or None (then GMN is the plain baseline with cosine ranking).
        pair_loss: L_gmn module called as ``pair_loss(logits, labels)``, or None.
        pic_loss: L_pic module called as ``pic_loss(embeddings, pair_keys)`` (its weight is
            lambda), or None.
        negatives, num_negatives: pair mining (:func:`mine_pairs`).
        detach_pairs: detach the instance features before forming pairs.
        test_with_mnet: rank with the fused M-Net distance (needs ``metric_net``).
        test_topk: 0 = M-Net on all pairs; k > 0 = only on each query's k nearest gallery
            items by instance distance.
        fusion_weight: ``w`` in ``d = (1 - w) * d_inst + w * (1 - sigmoid(logit))``.
        pair_chunk: pairs per M-Net forward at test time.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        pixel_mean,
        pixel_std,
        ce_loss: Optional[nn.Module] = None,
        triplet_loss: Optional[nn.Module] = None,
        in_feature: str = "res5",
        metric_net: Optional[MetricNet] = None,
        pair_loss: Optional[nn.Module] = None,
        pic_loss: Optional[nn.Module] = None,
        negatives: str = "hard",
        num_negatives: int = 3,
        detach_pairs: bool = False,
        test_with_mnet: bool = True,
        test_topk: int = 0,
        fusion_weight: float = 0.5,
        pair_chunk: int = 16384,
    ) -> None:
        super().__init__(
            backbone=backbone,
            head=head,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            ce_loss=ce_loss,
            triplet_loss=triplet_loss,
            memory_loss=None,
            in_feature=in_feature,
        )
        if metric_net is None and (pair_loss is not None or pic_loss is not None):
            raise ValueError(
                "GMN: the pair (L_gmn) and PIC losses need an M-Net (MODEL.GMN.MNET.ENABLED)"
            )
        if pic_loss is not None and pair_loss is None:
            raise ValueError(
                "GMN: the PIC loss needs the pair loss L_gmn "
                "(MODEL.GMN.LOSSES.BCE.ENABLED) so that M-Net is trained"
            )
        if test_with_mnet and metric_net is None:
            raise ValueError("GMN: MODEL.GMN.TEST.ENABLED needs an M-Net (MODEL.GMN.MNET.ENABLED)")
        if negatives not in NEGATIVE_MINING_MODES:
            raise ValueError(
                f"MODEL.GMN.PAIRS.NEGATIVES must be one of "
                f"{NEGATIVE_MINING_MODES}, got '{negatives}'"
            )
        if not 0.0 <= float(fusion_weight) <= 1.0:
            raise ValueError(f"MODEL.GMN.TEST.FUSION_WEIGHT must be in [0, 1], got {fusion_weight}")
        if int(test_topk) < 0 or int(pair_chunk) < 1:
            raise ValueError(
                f"MODEL.GMN.TEST.TOPK must be >= 0 and PAIR_CHUNK >= 1, got "
                f"{test_topk} and {pair_chunk}"
            )
        self.metric_net = metric_net
        self.pair_loss = pair_loss
        self.pic_loss = pic_loss
        self.negatives = negatives
        self.num_negatives = int(num_negatives)
        self.detach_pairs = bool(detach_pairs)
        self.test_with_mnet = bool(test_with_mnet)
        self.test_topk = int(test_topk)
        self.fusion_weight = float(fusion_weight)
        self.pair_chunk = int(pair_chunk)

    @classmethod
    def from_config(cls, cfg, num_pids_per_domain: Optional[Sequence[int]] = None) -> "GMN":
        """Build from the shared model's keys (``MODEL.BACKBONE/HEADS/LOSSES``) and
        ``MODEL.GMN.*`` (see :func:`reid_plugins.methods.gmn.config.add_gmn_config`);
        ``num_pids_per_domain`` sizes the identity classifier (None = inference model)."""
        if "GMN" not in cfg.MODEL:
            raise KeyError(
                "cfg.MODEL.GMN is missing: build the config with "
                "add_all_configs(get_cfg()) after importing reid_plugins.methods, or add_gmn_config(cfg)"
            )
        if cfg.MODEL.LOSSES.MEMORY.ENABLED:
            raise ValueError(
                "GMN does not use the memory loss; set MODEL.LOSSES.MEMORY.ENABLED False"
            )
        base = ReIDBaseline.from_config(cfg, num_pids_per_domain=num_pids_per_domain)
        g = cfg.MODEL.GMN
        mnet = None
        if g.MNET.ENABLED:
            mnet = MetricNet.from_config(cfg, in_dim=base.head.feat_dim)
        use_bce = mnet is not None and g.LOSSES.BCE.ENABLED
        return cls(
            backbone=base.backbone,
            head=base.head,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            ce_loss=base.ce_loss,
            triplet_loss=base.triplet_loss,
            in_feature=base.in_feature,
            metric_net=mnet,
            pair_loss=PairBCELoss.from_config(cfg) if use_bce else None,
            pic_loss=(
                PairIdentityCenterLoss.from_config(cfg)
                if use_bce and g.LOSSES.PIC.ENABLED
                else None
            ),
            negatives=g.PAIRS.NEGATIVES,
            num_negatives=g.PAIRS.NUM_NEGATIVES,
            detach_pairs=g.PAIRS.DETACH,
            test_with_mnet=bool(g.TEST.ENABLED and mnet is not None),
            test_topk=g.TEST.TOPK,
            fusion_weight=g.TEST.FUSION_WEIGHT,
            pair_chunk=g.TEST.PAIR_CHUNK,
        )

    # ------------------------------------------------------------------ DP switch
    def set_dp_active(self, active: bool) -> None:
        """Switch Dropout-based Perturbation on/off (no-op without M-Net)."""
        if self.metric_net is not None:
            self.metric_net.set_dp_active(active)

    @property
    def dp_active(self) -> bool:
        """The DP flag (a checkpointed buffer of the M-Net)."""
        return self.metric_net is not None and bool(self.metric_net.dp_active)

    # ------------------------------------------------------------------ training
    def domain_losses(self, batch: Batch) -> Dict[str, torch.Tensor]:
        """CE, triplet and the M-Net losses on one (domain) batch."""
        out = self.extract(batch)
        pids = self._targets(batch, "pid")
        losses: Dict[str, torch.Tensor] = {}
        if self.ce_loss is not None:
            losses["loss_cls"] = self.ce_loss(out["logits"], pids)
        if self.triplet_loss is not None:
            losses["loss_triplet"] = self.triplet_loss(out["pre_bn"], pids)
        if self.pair_loss is not None:
            losses.update(self.pair_losses(out["post_bn"], pids))
        return losses

    def pair_losses(self, feats: torch.Tensor, pids: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``loss_gmn`` (and ``loss_pic``) of the pairs mined from ``(feats, pids)``.

        Args:
            feats: ``(B, D)`` instance features (post-BN; L2-normalised here).
            pids: ``(B,)`` identities.
        """
        f = F.normalize(feats, dim=1)
        if self.detach_pairs:
            f = f.detach()
        with torch.no_grad():
            dist = 1.0 - f @ f.t()
        ia, ib, labels = mine_pairs(pids, dist, self.negatives, self.num_negatives)
        logits, emb = self.metric_net(pair_features(f[ia], f[ib]), return_embedding=True)
        losses = {"loss_gmn": self.pair_loss(logits, labels)}
        if self.pic_loss is not None:
            losses["loss_pic"] = self.pic_loss(emb, pair_identity_keys(pids[ia], pids[ib]))
        return losses

    # ------------------------------------------------------------------ test-time scoring
    @property
    def uses_metric_net_at_test(self) -> bool:
        return self.test_with_mnet and self.metric_net is not None

    @torch.no_grad()
    def pairwise_distance(
        self,
        q_feats: torch.Tensor,
        g_feats: torch.Tensor,
        *,
        topk: Optional[int] = None,
        pair_chunk: Optional[int] = None,
    ) -> torch.Tensor:
        """Fused query-gallery distances ``(N_q, N_g)`` (lower = more similar).

        ``d_inst = (1 - cos) / 2`` and ``d_m = 1 - sigmoid(M-Net logit)`` are both in
        ``[0, 1]``; the fused distance is ``(1 - w) d_inst + w d_m``. With ``topk = k > 0``
        only each query's k nearest gallery items under ``d_inst`` are scored by M-Net; they
        get ``fused - 2`` (so they stay ahead of all others, re-ordered among themselves)
        and every other item keeps ``d_inst``: the ranking beyond position k is exactly the
        instance ranking. Memory: M-Net runs on at most ``pair_chunk`` pairs at a time; the
        result matrix is the only ``N_q x N_g`` allocation besides ``d_inst``. M-Net's eval-mode
        outputs are used (running BN statistics, no DP) whatever the model's mode, because
        evaluators call this after the inference pass has restored training mode. Without
        M-Net, returns ``d_inst``.

        Args:
            q_feats, g_feats: ``(N_q, D)`` / ``(N_g, D)`` features (normalised here).
            topk: overrides ``self.test_topk``.
            pair_chunk: overrides ``self.pair_chunk``.
        """
        if q_feats.dim() != 2 or g_feats.dim() != 2 or q_feats.shape[1] != g_feats.shape[1]:
            raise ValueError(
                f"GMN.pairwise_distance: need (N_q, D) and (N_g, D) features, got "
                f"{tuple(q_feats.shape)} and {tuple(g_feats.shape)}"
            )
        out_device = q_feats.device
        q = q_feats.to(self.device, torch.float32)
        g = g_feats.to(self.device, torch.float32)
        if self.metric_net is None:
            return instance_distance(q, g).to(out_device)
        d = fused_pairwise_distance(
            self.metric_net,
            q,
            g,
            topk=self.test_topk if topk is None else int(topk),
            fusion_weight=self.fusion_weight,
            pair_chunk=self.pair_chunk if pair_chunk is None else int(pair_chunk),
        )
        return d.to(out_device)
