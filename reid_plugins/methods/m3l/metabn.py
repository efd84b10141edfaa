"""MetaBN (M3L, Zhao et al. CVPR 2021, Sec. 3.4, Eq. 5-7) and the BNNeck head that uses it.

:class:`MetaBatchNorm1d` is a ghost-capable BatchNorm1d (:class:`GhostBatchNorm1d`) with three
modes, switched by the owner (the ``M3L`` meta-architecture) through :meth:`set_mode`:

* ``"plain"`` (default, and always in eval mode): exactly :class:`GhostBatchNorm1d`.
* ``"meta_train"``: plain BN, and every forward call saves the (detached) batch mean and
  biased variance of its input, one entry per call = per meta-train domain (per ghost group
  when ``split`` > 0).
* ``"meta_test"``: for every saved entry ``i`` (meta-train domain), sample
  ``z_j ~ N(mu_i, s_i)`` for each meta-test feature ``F_T[j]`` (Eq. 5), mix
  ``F_i = lam_i * F_T + (1 - lam_i) * Z_i`` with ``lam_i ~ Beta(a, b)`` (Eq. 6), and batch-normalise
  ``F_i`` with its *own* mean / biased variance and the shared affine ``gamma, beta`` (Eq. 7).
  By default (the authors' code) one ``lam`` serves all mixes of a pass and the Gaussian's
  scale ``s_i`` is the saved *variance*; ``lambda_mode="per_domain"`` and
  ``sample_scale="std"`` give the paper's reading (one ``lam_i`` per mix, ``s_i = sigma_i``).
  Returns a ``(K, N, C)`` tensor, one normalised mix per saved domain. Running statistics are
  not updated in this mode.

Ghost BN (``split`` > 0, ``MODEL.HEADS.BN_SPLIT``): emulates a batch spread over several
devices. Meta-train saves one (mean, var) per group of ``split`` samples; in meta-test the
features are split into groups the same way, group ``g`` is mixed with samples from saved
group ``g mod G_i`` of domain ``i`` and normalised with its own statistics.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from reid_plugins.modeling.heads.embedding_head import (
    REID_HEADS_REGISTRY,
    EmbeddingHead,
    GhostBatchNorm1d,
)

__all__ = ["MetaBatchNorm1d", "MetaBNHead", "METABN_MODES", "METABN_LAMBDA_MODES"]

METABN_MODES = ("plain", "meta_train", "meta_test")
METABN_LAMBDA_MODES = ("shared", "per_domain")

# (mean, std) of a meta-train group and the number of samples -> (n, C) samples.
ZSampler = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


class MetaBatchNorm1d(GhostBatchNorm1d):
    """BatchNorm1d with the MetaBN meta-test mixing of M3L (see the module docstring).

    Args:
        num_features: channels ``C``.
        split: ghost-BN group size (0 = whole batch).
        mix_beta: ``(a, b)`` of the Beta distribution of ``lam`` (paper: ``(1, 1)``).
        sample_scale: ``"var"`` (``s_i = var_i``, the authors' code) or ``"std"``
            (``s_i = sqrt(var_i)``, the paper's sigma).
        lambda_mode: ``"shared"`` (one ``lam`` for all mixes of a meta-test pass, the authors'
            code) or ``"per_domain"`` (one ``lam`` per mix).
        lam_sampler: optional ``fn() -> float`` replacing the Beta draw (tests).
        z_sampler: optional ``fn(mean, scale, n) -> (n, C) tensor`` replacing the Gaussian
            draw (tests).
        eps, momentum: as in :class:`torch.nn.BatchNorm1d`.

    Random draws use torch's global RNG (whose state the trainer checkpoints) unless a
    sampler is injected.
    """

    def __init__(
        self,
        *,
        num_features: int,
        split: int = 0,
        mix_beta: Sequence[float] = (1.0, 1.0),
        sample_scale: str = "var",
        lambda_mode: str = "shared",
        lam_sampler: Optional[Callable[[], float]] = None,
        z_sampler: Optional[ZSampler] = None,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__(num_features, split=split, eps=eps, momentum=momentum)
        if sample_scale not in ("std", "var"):
            raise ValueError(
                "MetaBatchNorm1d: sample_scale (MODEL.M3L.METABN_SAMPLE_SCALE) must be 'std' "
                f"or 'var', got {sample_scale!r}"
            )
        if lambda_mode not in METABN_LAMBDA_MODES:
            raise ValueError(
                "MetaBatchNorm1d: lambda_mode (MODEL.M3L.METABN_LAMBDA) must be one of "
                f"{METABN_LAMBDA_MODES}, got {lambda_mode!r}"
            )
        mix_beta = [float(v) for v in mix_beta]
        if len(mix_beta) != 2 or min(mix_beta) <= 0:
            raise ValueError(
                "MetaBatchNorm1d: mix_beta (MODEL.M3L.METABN_MIX_BETA) must be two positive "
                f"numbers (a, b) of Beta(a, b), got {mix_beta}"
            )
        self.mix_beta = tuple(mix_beta)
        self.sample_scale = sample_scale
        self.lambda_mode = lambda_mode
        self.lam_sampler = lam_sampler
        self.z_sampler = z_sampler
        self.mode = "plain"
        # One entry per meta-train forward call: a list of (mean, var) per ghost group.
        self.saved_stats: List[List[Tuple[torch.Tensor, torch.Tensor]]] = []

    # ------------------------------------------------------------------ mode control
    def set_mode(self, mode: str) -> None:
        """Switch mode; entering ``"meta_train"`` clears the saved statistics (other modes keep
        them, so that a meta-test pass can follow a meta-train pass)."""
        if mode not in METABN_MODES:
            raise ValueError(f"MetaBatchNorm1d: mode must be one of {METABN_MODES}, got {mode!r}")
        if mode == "meta_train":
            self.clear_saved()
        self.mode = mode

    def clear_saved(self) -> None:
        """Forget the saved meta-train statistics."""
        self.saved_stats = []

    def _groups(self, x: torch.Tensor) -> List[torch.Tensor]:
        if self.split <= 0 or x.shape[0] <= self.split:
            return [x]
        return list(x.split(self.split))

    # ------------------------------------------------------------------ sampling
    def sample_lambda(self) -> float:
        if self.lam_sampler is not None:
            return float(self.lam_sampler())
        a, b = self.mix_beta
        return float(torch.distributions.Beta(torch.tensor(a), torch.tensor(b)).sample())

    def sample_z(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> torch.Tensor:
        scale = var.clamp(min=0).sqrt() if self.sample_scale == "std" else var
        if self.z_sampler is not None:
            return self.z_sampler(mean, scale, n)
        noise = torch.randn(n, mean.shape[0], device=mean.device, dtype=mean.dtype)
        return mean + scale * noise

    # ------------------------------------------------------------------ forward
    def normalize_own_stats(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 7 on each ghost group: own batch mean / biased variance, shared affine.

        Running statistics are neither used nor updated.
        """
        return torch.cat(
            [
                F.batch_norm(g, None, None, self.weight, self.bias, True, 0.0, self.eps)
                for g in self._groups(x)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.mode == "plain":
            return super().forward(x)
        if self.mode == "meta_train":
            self.saved_stats.append(
                [(g.detach().mean(0), g.detach().var(0, unbiased=False)) for g in self._groups(x)]
            )
            return super().forward(x)
        if not self.saved_stats:
            raise RuntimeError(
                "MetaBatchNorm1d: meta-test pass without saved meta-train statistics; run the "
                "meta-train domains in 'meta_train' mode first"
            )
        groups = self._groups(x)
        mixes = []
        lam = self.sample_lambda() if self.lambda_mode == "shared" else None
        for stats in self.saved_stats:
            if self.lambda_mode == "per_domain":
                lam = self.sample_lambda()
            parts = []
            for g_idx, g in enumerate(groups):
                mean, var = stats[g_idx % len(stats)]
                z = self.sample_z(mean.to(g), var.to(g), g.shape[0])
                mixed = lam * g + (1.0 - lam) * z
                parts.append(
                    F.batch_norm(mixed, None, None, self.weight, self.bias, True, 0.0, self.eps)
                )
            mixes.append(torch.cat(parts))
        return torch.stack(mixes)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", split={self.split}, mix_beta={self.mix_beta}, sample_scale={self.sample_scale}"
            + f", lambda_mode={self.lambda_mode}"
        )


@REID_HEADS_REGISTRY.register()
class MetaBNHead(EmbeddingHead):
    """:class:`EmbeddingHead` whose BNNeck is a :class:`MetaBatchNorm1d` (M3L).

    Same outputs as :class:`EmbeddingHead`; in the MetaBN meta-test mode ``"post_bn"`` is
    ``(K, N, C)`` (one normalised mix per saved meta-train domain). The neck's weight is
    initialised to 1 and its bias to 0; the bias is trainable as in the authors' code
    (``bias_trainable=False``: frozen, as in the BNNeck).

    Args:
        feat_dim, num_classes, pool, bn_split, cls_layer: see :class:`EmbeddingHead`.
        mix_beta, sample_scale, lambda_mode: see :class:`MetaBatchNorm1d`.
        bias_trainable: the neck's bias is a trained parameter (``MODEL.M3L.NECK_BIAS_TRAINABLE``).
    """

    def __init__(
        self,
        *,
        feat_dim: int,
        num_classes: int = 0,
        pool: str = "avg",
        bn_split: int = 0,
        cls_layer: str = "none",
        mix_beta: Sequence[float] = (1.0, 1.0),
        sample_scale: str = "var",
        lambda_mode: str = "shared",
        bias_trainable: bool = True,
    ) -> None:
        super().__init__(
            feat_dim=feat_dim,
            num_classes=num_classes,
            pool=pool,
            neck="bnneck",
            bn_split=bn_split,
            cls_layer=cls_layer,
        )
        self.bottleneck = MetaBatchNorm1d(
            num_features=feat_dim,
            split=bn_split,
            mix_beta=mix_beta,
            sample_scale=sample_scale,
            lambda_mode=lambda_mode,
        )
        self.bottleneck.bias.requires_grad_(bool(bias_trainable))
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)

    @classmethod
    def from_config(cls, cfg, *, feat_dim: int, num_classes: int) -> "MetaBNHead":
        """``MODEL.HEADS.{POOL, BN_SPLIT, CLS_LAYER}`` and
        ``MODEL.M3L.{METABN_MIX_BETA, METABN_SAMPLE_SCALE, METABN_LAMBDA, NECK_BIAS_TRAINABLE}``.
        """
        if "M3L" not in cfg.MODEL:
            raise KeyError(
                "MetaBNHead needs cfg.MODEL.M3L: call reid_plugins.config.add_m3l_config(cfg) "
                "(or add_all_configs) before merging the config file"
            )
        h, m = cfg.MODEL.HEADS, cfg.MODEL.M3L
        if h.NECK != "bnneck":
            raise ValueError(
                f"MetaBNHead replaces the BNNeck: MODEL.HEADS.NECK must be "
                f"'bnneck', got '{h.NECK}'"
            )
        return cls(
            feat_dim=feat_dim,
            num_classes=num_classes,
            pool=h.POOL,
            bn_split=h.BN_SPLIT,
            cls_layer=h.CLS_LAYER,
            mix_beta=m.METABN_MIX_BETA,
            sample_scale=m.METABN_SAMPLE_SCALE,
            lambda_mode=m.METABN_LAMBDA,
            bias_trainable=m.NECK_BIAS_TRAINABLE,
        )
