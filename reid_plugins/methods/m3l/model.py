"""``M3L``: Memory-based Multi-source Meta-Learning (Zhao et al., CVPR 2021).

The model (backbone -> GAP -> MetaBN neck, identification + triplet losses) computes the
losses of one *stage*; the meta-update itself (theta' from an inner step, the meta-test loss on
theta', the outer step) lives in :class:`reid_plugins.engine.meta_trainer.MetaStepTrainer`.
Equation numbers refer to the paper:

* Eq. 2-3: per-domain identity memories and the memory identification loss
  (:class:`~reid_plugins.modeling.losses.MemoryLoss`);
* Eq. 5-7: MetaBN (:class:`~reid_plugins.modeling.heads.MetaBatchNorm1d`);
* Eq. 8-9: meta-train loss = mean over meta-train domains of (triplet + identification);
* Eq. 10: meta-test loss = triplet(X_T; theta') + mean over the N_S-1 MetaBN mixes of the
  identification loss.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from reid_plugins.modeling.backbone import Backbone
from reid_plugins.modeling.heads import build_reid_head
from reid_plugins.modeling.losses import CrossEntropyLoss, MemoryLoss, TripletLoss
from reid_plugins.modeling.meta_arch.baseline import Batch, ReIDBaseline
from reid_plugins.modeling.meta_arch.build import META_ARCH_REGISTRY

from .memory import M3LMemoryLoss
from .metabn import MetaBatchNorm1d

__all__ = ["M3L", "preserve_norm_running_stats", "M3L_CLASSIFIERS", "M3L_LOSSES", "M3L_STAGES"]

M3L_CLASSIFIERS = ("memory", "fc_global", "fc_parallel")
M3L_LOSSES = ("id", "triplet")
M3L_STAGES = ("standard", "meta_train", "meta_test")

# (domain, detached plain post-BN features (N, C), per-domain pids (N,))
Collected = List[Tuple[int, torch.Tensor, torch.Tensor]]


@contextlib.contextmanager
def preserve_norm_running_stats(model: nn.Module) -> Iterator[None]:
    """Restore every BN / InstanceNorm running statistic of ``model`` on exit."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            bufs = [
                b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None
            ]
            saved.append((bufs, [b.clone() for b in bufs]))
    try:
        yield
    finally:
        with torch.no_grad():
            for bufs, copies in saved:
                for b, c in zip(bufs, copies):
                    b.copy_(c)


@META_ARCH_REGISTRY.register()
class M3L(ReIDBaseline):
    """M3L model: the shared ReID model with a MetaBN neck and stage-aware losses.

    Training input: a list of per-domain batches (``DATALOADER.MULTI_SOURCE``), each a
    ``list[dict]`` whose records carry ``"image"``, ``"pid"`` (global), ``"domain"`` and
    ``"domain_pid"``. ``forward(batches, *, stage, update_memory, collector)``:

    * ``stage="standard"``: losses of every given domain, averaged over domains (the paper's
      baseline, and the meta-train loss of Eq. 9 when given the meta-train domains). MetaBN
      acts as plain BN.
    * ``stage="meta_train"``: same losses, and MetaBN saves each domain's batch statistics.
    * ``stage="meta_test"``: one batch (the meta-test domain); with MetaBN on, the
      identification loss is averaged over the ``K`` mixed features (Eq. 10), the triplet loss
      uses the pre-BN feature; MetaBN's saved statistics are cleared afterwards. With MetaBN
      off the plain BNNeck feature is used (K = 1).

    Returned keys: ``loss_triplet`` (Eq. 4), ``loss_memory`` (Eq. 3, ``classifier="memory"``)
    or ``loss_cls`` (FC classifiers of Table 5). ``update_memory=True`` momentum-updates the
    memories from the plain post-BN features right after the losses (what
    :class:`ReIDBaseline` does; used when the model is trained by ``DefaultTrainer``);
    :class:`~reid_plugins.engine.MetaTrainer` passes False and updates them after the
    optimiser step. ``collector`` (a list) receives ``(domain, features, pids)`` of the plain
    (un-mixed) post-BN features, detached. Eval mode: ``[{"feature": L2-normalised post-BN}]``.

    Args:
        backbone: returns ``{in_feature: map}``.
        head: ``{"pre_bn", "post_bn"}`` head; its ``bottleneck`` must be a
            :class:`MetaBatchNorm1d` when ``metabn`` is True (``MODEL.HEADS.NAME: MetaBNHead``).
        pixel_mean, pixel_std: per-channel normalisation of the 0-255 input.
        classifier: ``"memory"``, ``"fc_global"`` or ``"fc_parallel"`` (``MODEL.M3L.CLASSIFIER``).
        triplet_loss: batch-hard triplet module, or None (triplet not in ``MODEL.M3L.LOSSES``).
        memory_loss: per-domain memories (required iff ``classifier="memory"`` and the
            identification loss is used), else None.
        ce_loss: cross-entropy module (required iff an FC classifier is used), else None.
        num_pids_per_domain: identities of each source domain (sizes of the FC layers).
        metabn: use MetaBN mixing in the meta-test stage (``MODEL.M3L.METABN``).
        in_feature: backbone output used by the head.

    Raises:
        ValueError: on an unknown classifier, no loss at all, inconsistent loss modules, or
            ``metabn`` without a MetaBN neck.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        classifier: str = "memory",
        triplet_loss: Optional[nn.Module] = None,
        memory_loss: Optional[MemoryLoss] = None,
        ce_loss: Optional[nn.Module] = None,
        num_pids_per_domain: Sequence[int] = (),
        metabn: bool = True,
        in_feature: str = "res5",
    ) -> None:
        nn.Module.__init__(self)  # ReIDBaseline's checks do not apply (own loss set-up)
        if classifier not in M3L_CLASSIFIERS:
            raise ValueError(
                f"MODEL.M3L.CLASSIFIER must be one of {M3L_CLASSIFIERS}, " f"got {classifier!r}"
            )
        if classifier == "memory" and ce_loss is not None:
            raise ValueError(
                "M3L: ce_loss is only used with an FC classifier (fc_global / " "fc_parallel)"
            )
        if classifier != "memory" and memory_loss is not None:
            raise ValueError(f"M3L: memory_loss given but MODEL.M3L.CLASSIFIER={classifier!r}")
        feat_dim = int(head.feat_dim)
        self._init_network(backbone, head, pixel_mean, pixel_std, in_feature)
        self.classifier_type = classifier
        self.triplet_loss = triplet_loss
        self.memory_loss = memory_loss
        self.ce_loss = ce_loss
        self.classifiers: Optional[nn.ModuleList] = None
        if ce_loss is not None:
            sizes = [int(n) for n in num_pids_per_domain]
            if not sizes or min(sizes) <= 0:
                raise ValueError(
                    "M3L: an FC classifier needs num_pids_per_domain (identities "
                    f"of each DATASETS.TRAIN set), got {list(num_pids_per_domain)}"
                )
            outs = [sum(sizes)] if classifier == "fc_global" else sizes
            self.classifiers = nn.ModuleList(nn.Linear(feat_dim, n, bias=False) for n in outs)
            for fc in self.classifiers:
                nn.init.normal_(fc.weight, std=0.001)
        self.metabn = bool(metabn)
        if self.metabn and not self._metabn_modules(head):
            raise ValueError(
                "MODEL.M3L.METABN is True but the head has no MetaBatchNorm1d: "
                "set MODEL.HEADS.NAME: MetaBNHead"
            )

    @classmethod
    def from_config(cls, cfg, num_pids_per_domain: Optional[Sequence[int]] = None) -> "M3L":
        """Build from ``MODEL.{BACKBONE, HEADS, LOSSES, M3L}`` and the training sets' pids.

        ``MODEL.M3L.LOSSES`` / ``CLASSIFIER`` choose the losses; ``MODEL.LOSSES.*`` give their
        hyper-parameters (their ``ENABLED`` flags are ignored). ``num_pids_per_domain``
        (from the trainer) sizes the memories / FC classifiers; None = inference model
        without them.
        """
        if "M3L" not in cfg.MODEL:
            raise KeyError(
                "cfg.MODEL.M3L is missing: call add_m3l_config(cfg) (or "
                "add_all_configs) before merging an M3L config"
            )
        m = cfg.MODEL.M3L
        if m.CLASSIFIER not in M3L_CLASSIFIERS:
            raise ValueError(
                f"MODEL.M3L.CLASSIFIER must be one of {M3L_CLASSIFIERS}, got {m.CLASSIFIER!r}"
            )
        losses = [str(x) for x in m.LOSSES]
        if "memory" in losses and m.CLASSIFIER != "memory":
            raise ValueError(
                f"MODEL.M3L.LOSSES contains 'memory' but MODEL.M3L.CLASSIFIER={m.CLASSIFIER!r}: "
                "use 'id' for the identification loss of an FC classifier"
            )
        losses = ["id" if x == "memory" else x for x in losses]  # 'memory' = 'id' + memory
        unknown = [x for x in losses if x not in M3L_LOSSES]
        if unknown or not losses:
            raise ValueError(
                f"MODEL.M3L.LOSSES must be a non-empty subset of {M3L_LOSSES} ('id' = "
                "identification with MODEL.M3L.CLASSIFIER; 'memory' is accepted for 'id' with "
                f"the memory classifier), got {list(m.LOSSES)}"
            )
        backbone, in_feature, feat_dim = cls._backbone_from_config(cfg)
        head = build_reid_head(cfg, feat_dim=feat_dim, num_classes=0)
        use_id = "id" in losses
        pids_per_domain: List[int] = []
        if use_id and num_pids_per_domain is not None:
            pids_per_domain = [int(n) for n in num_pids_per_domain]
        else:
            use_id = False  # inference model: no identity classifier / memory
        memory = ce = None
        if use_id and m.CLASSIFIER == "memory":
            memory = M3LMemoryLoss.from_config(
                cfg, num_pids_per_domain=pids_per_domain, feat_dim=feat_dim
            )
        elif use_id:
            ce = CrossEntropyLoss.from_config(cfg)
        return cls(
            backbone=backbone,
            head=head,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            classifier=m.CLASSIFIER,
            triplet_loss=TripletLoss.from_config(cfg) if "triplet" in losses else None,
            memory_loss=memory,
            ce_loss=ce,
            num_pids_per_domain=pids_per_domain,
            metabn=m.METABN,
            in_feature=in_feature,
        )

    # ------------------------------------------------------------------ MetaBN control
    @staticmethod
    def _metabn_modules(module: nn.Module) -> List[MetaBatchNorm1d]:
        return [m for m in module.modules() if isinstance(m, MetaBatchNorm1d)]

    def _set_metabn_mode(self, mode: str, clear: bool = False) -> None:
        for bn in self._metabn_modules(self):
            bn.set_mode(mode)
            if clear:
                bn.clear_saved()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        batched_inputs,
        *,
        stage: str = "standard",
        update_memory: bool = True,
        collector: Optional[Collected] = None,
    ):
        if not self.training:
            return self.inference(batched_inputs)
        if stage not in M3L_STAGES:
            raise ValueError(f"M3L.forward: stage must be one of {M3L_STAGES}, got {stage!r}")
        domains = self.split_domains(batched_inputs)
        if stage == "meta_test" and len(domains) != 1:
            raise ValueError(f"M3L meta-test stage takes one domain batch, got {len(domains)}")
        if stage == "meta_train":
            self._set_metabn_mode("meta_train")  # clears previously saved statistics
        elif stage == "meta_test" and self.metabn:
            self._set_metabn_mode("meta_test")
        else:
            self._set_metabn_mode("plain")
        try:
            return self._mean_domain_losses(
                domains, update_memory=update_memory, collector=collector
            )
        finally:
            # Meta-train statistics stay saved for the meta-test pass; otherwise cleared.
            self._set_metabn_mode("plain", clear=stage != "meta_train")

    def domain_losses(
        self,
        batch: Batch,
        *,
        update_memory: bool = True,
        collector: Optional[Collected] = None,
    ) -> Dict[str, torch.Tensor]:
        """Enabled losses on one domain's batch (mixes averaged, see the class docstring)."""
        out = self.extract(batch)
        pre, post = out["pre_bn"], out["post_bn"]
        mixes = post if post.dim() == 3 else post.unsqueeze(0)  # (K, N, C)
        domain = self._single_domain(batch, "M3L")
        domain_pids = self._domain_pids(batch)
        losses: Dict[str, torch.Tensor] = {}
        if self.triplet_loss is not None:
            losses["loss_triplet"] = self.triplet_loss(pre, self._targets(batch, "pid"))
        if self.memory_loss is not None:
            losses["loss_memory"] = torch.stack(
                [self.memory_loss(f, domain_pids, domain) for f in mixes]
            ).mean()
        if self.classifiers is not None:
            if self.classifier_type == "fc_global":
                fc, targets = self.classifiers[0], self._targets(batch, "pid")
            else:
                if domain >= len(self.classifiers):
                    raise ValueError(
                        f"Domain {domain} has no FC classifier "
                        f"({len(self.classifiers)} source domains)"
                    )
                fc, targets = self.classifiers[domain], domain_pids
            losses["loss_cls"] = torch.stack([self.ce_loss(fc(f), targets) for f in mixes]).mean()
        if not losses:
            raise RuntimeError(
                "M3L has no training loss: it was built for inference (build_model(cfg) "
                "without num_pids_per_domain)"
            )
        if (update_memory and self.memory_loss is not None) or collector is not None:
            with torch.no_grad():
                if post.dim() == 2:
                    plain = post.detach()
                else:  # MetaBN meta-test: the un-mixed feature, normalised with its own stats
                    plain = self.head.bottleneck.normalize_own_stats(pre.detach())
            if update_memory and self.memory_loss is not None:
                self.memory_loss.update(plain, domain_pids, domain)
            if collector is not None:
                collector.append((domain, plain, domain_pids))
        return losses

    # ------------------------------------------------------------------ memories
    @torch.no_grad()
    def update_memories_from_features(self, collected: Collected) -> None:
        """Momentum-update (Eq. 2) each domain's memory from collected plain features."""
        if self.memory_loss is None:
            return
        for domain, feats, pids in collected:
            self.memory_loss.update(feats, pids, domain)

    @torch.no_grad()
    def update_memories_from_forward(self, batched_inputs) -> None:
        """Momentum-update (Eq. 2) every domain's memory from a new no-grad forward.

        Uses the module's current mode (training: batch statistics, as the memory loss sees
        them); BN running statistics are restored afterwards, so this pass does not count as
        a training forward.
        """
        if self.memory_loss is None:
            return
        self._set_metabn_mode("plain", clear=True)
        with preserve_norm_running_stats(self):
            for batch in self.split_domains(batched_inputs):
                domain = self._single_domain(batch, "M3L")
                feats = self.extract(batch)["post_bn"]
                self.memory_loss.update(feats, self._domain_pids(batch), domain)
