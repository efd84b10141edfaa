"""GMN's metric network (M-Net) on sample-pair features, and pair mining from P x K batches.

Sample-pair feature (GMN Eq. 1): for instance features ``p`` and ``q`` (L2-normalised),
``f_sp = (p - q) * (p - q)`` element-wise. Note ``sum(f_sp) = ||p - q||^2 = 2 - 2 cos(p, q)``,
so M-Net can represent the cosine distance exactly and learns re-weightings of it.
"""

from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MetricNet",
    "pair_features",
    "mine_pairs",
    "pair_identity_keys",
    "NEGATIVE_MINING_MODES",
]

logger = logging.getLogger(__name__)

#: Values of ``MODEL.GMN.PAIRS.NEGATIVES``.
NEGATIVE_MINING_MODES = ("all", "hard", "random")


def pair_features(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Sample-pair features ``(p - q) * (p - q)`` of row-aligned ``(N, D)`` tensors.

    Raises:
        ValueError: shapes differ.
    """
    if p.shape != q.shape:
        raise ValueError(f"pair_features: shapes differ: {tuple(p.shape)} vs {tuple(q.shape)}")
    d = p - q
    return d * d


class MetricNet(nn.Module):
    """M-Net: sample-pair feature ``(N, in_dim)`` -> same-identity logit ``(N,)``.

    Layers: ``[Dropout-based Perturbation] -> (FC -> BN -> ReLU) x len(hidden_dims) -> FC(1)``
    (FC layers before a BN have no bias). The output of the last hidden block is the M-Net
    embedding used by the pair-identity centre loss.

    Dropout-based Perturbation (DP): element-wise dropout with probability ``dp_rate`` on the
    input sample-pair feature, applied only when the module is training **and** the persistent
    buffer ``dp_active`` is set (by :meth:`set_dp_active`, called by GMN's warm-up hook). The
    buffer is saved in checkpoints, so a resumed run keeps DP on.

    Args:
        in_dim: dimension D of the instance features (and of the pair features).
        hidden_dims: widths of the hidden blocks (may be empty: a linear M-Net).
        norm: "BN" or "none".
        dp_rate: dropout probability of DP in ``[0, 1)`` (0 disables DP).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        hidden_dims: Sequence[int] = (512, 128),
        norm: str = "BN",
        dp_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if int(in_dim) < 1 or any(int(h) < 1 for h in hidden_dims):
            raise ValueError(
                f"MetricNet: in_dim and MODEL.GMN.MNET.HIDDEN_DIMS must be positive, got "
                f"{in_dim} and {list(hidden_dims)}"
            )
        if norm not in ("BN", "none"):
            raise ValueError(f"MetricNet: MODEL.GMN.MNET.NORM must be 'BN' or 'none', got '{norm}'")
        if not 0.0 <= float(dp_rate) < 1.0:
            raise ValueError(f"MetricNet: MODEL.GMN.DP.RATE must be in [0, 1), got {dp_rate}")
        self.in_dim = int(in_dim)
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.norm = norm
        self.dp_rate = float(dp_rate)
        blocks: List[nn.Module] = []
        prev = self.in_dim
        for width in self.hidden_dims:
            layers: List[nn.Module] = [nn.Linear(prev, width, bias=norm == "none")]
            if norm == "BN":
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            blocks.append(nn.Sequential(*layers))
            prev = width
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(prev, 1)
        self.embed_dim = prev
        self.register_buffer("dp_active", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg, *, in_dim: int) -> "MetricNet":
        """Build from ``MODEL.GMN.MNET.{HIDDEN_DIMS, NORM}`` and ``MODEL.GMN.DP.{ENABLED,
        RATE}`` (DP disabled -> ``dp_rate = 0``)."""
        g = cfg.MODEL.GMN
        return cls(
            in_dim=in_dim,
            hidden_dims=list(g.MNET.HIDDEN_DIMS),
            norm=g.MNET.NORM,
            dp_rate=g.DP.RATE if g.DP.ENABLED else 0.0,
        )

    # ------------------------------------------------------------------ DP switch
    def set_dp_active(self, active: bool) -> None:
        """Switch Dropout-based Perturbation on/off (stored in the ``dp_active`` buffer)."""
        self.dp_active.fill_(bool(active))

    @property
    def dp_enabled(self) -> bool:
        """True when DP perturbs the inputs in training mode (flag set and rate > 0)."""
        return bool(self.dp_active) and self.dp_rate > 0

    # ------------------------------------------------------------------ forward
    def forward(self, f_sp: torch.Tensor, return_embedding: bool = False):
        """
        Args:
            f_sp: ``(N, in_dim)`` sample-pair features.
            return_embedding: also return the last hidden output ``(N, embed_dim)``.

        Returns:
            logits ``(N,)`` (and the embedding when requested).
        """
        if f_sp.dim() != 2 or f_sp.shape[1] != self.in_dim:
            raise ValueError(
                f"MetricNet: expected pair features of shape (N, {self.in_dim}), got "
                f"{tuple(f_sp.shape)}"
            )
        if self.training and self.dp_enabled:
            f_sp = F.dropout(f_sp, p=self.dp_rate, training=True)
        emb = self.blocks(f_sp)
        logits = self.classifier(emb).squeeze(1)
        return (logits, emb) if return_embedding else logits

    # ------------------------------------------------------------------ test-time scoring
    # The score_* methods compute eval-mode outputs (running BN statistics folded into the FC
    # layers, no DP) whatever the module's mode, reusing pre-allocated buffers: peak extra
    # memory ~ max(pair_chunk, k) * (D + sum(hidden_dims)) floats, independent of N_q, N_g.
    def _eval_layers(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """``(W^T, b)`` of every hidden block with its eval-mode BN folded in."""
        layers = []
        for block in self.blocks:
            lin = block[0]
            w = lin.weight
            b = lin.bias if lin.bias is not None else w.new_zeros(w.shape[0])
            if self.norm == "BN":
                bn = block[1]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                w = w * scale.unsqueeze(1)
                b = (b - bn.running_mean) * scale + bn.bias
            layers.append((w.t().contiguous(), b.contiguous()))
        return layers

    def _eval_logits(self, f: torch.Tensor, layers, bufs: List[torch.Tensor]) -> torch.Tensor:
        x = f
        for (wt, b), buf in zip(layers, bufs):
            out = buf[: x.shape[0]]
            torch.addmm(b, x, wt, out=out)
            x = out.clamp_(min=0)
        return torch.addmv(self.classifier.bias, x, self.classifier.weight[0])

    def _buffers_for(self, n: int, ref: torch.Tensor) -> List[torch.Tensor]:
        return [ref.new_empty(n, h) for h in self.hidden_dims]

    @torch.no_grad()
    def score_pairs(
        self,
        q: torch.Tensor,
        g: torch.Tensor,
        q_idx: torch.Tensor,
        g_idx: torch.Tensor,
        pair_chunk: int = 16384,
    ) -> torch.Tensor:
        """Eval-mode logits ``(M,)`` of the pairs ``(q[q_idx[i]], g[g_idx[i]])``, gathered and
        scored ``pair_chunk`` pairs at a time."""
        if q_idx.shape != g_idx.shape or q_idx.dim() != 1:
            raise ValueError(
                f"MetricNet.score_pairs: q_idx and g_idx must be 1-D of equal length, got "
                f"{tuple(q_idx.shape)} and {tuple(g_idx.shape)}"
            )
        chunk = max(1, min(int(pair_chunk), q_idx.shape[0]))
        layers, bufs = self._eval_layers(), self._buffers_for(chunk, q)
        f_buf = q.new_empty(chunk, q.shape[1])
        out = q.new_empty(q_idx.shape[0])
        for s in range(0, q_idx.shape[0], chunk):
            qi, gi = q_idx[s : s + chunk], g_idx[s : s + chunk]
            f = f_buf[: qi.shape[0]]
            torch.index_select(q, 0, qi, out=f)
            f.sub_(g.index_select(0, gi)).pow_(2)
            out[s : s + chunk] = self._eval_logits(f, layers, bufs)
        return out

    @torch.no_grad()
    def score_topk(
        self, q: torch.Tensor, g: torch.Tensor, idx: torch.Tensor, pair_chunk: int = 16384
    ) -> torch.Tensor:
        """Eval-mode logits ``(N_q, k)`` of the pairs ``(q[i], g[idx[i, j]])`` (e.g. each
        query's k nearest gallery items), about ``pair_chunk`` pairs at a time."""
        if idx.dim() != 2 or idx.shape[0] != q.shape[0]:
            raise ValueError(
                f"MetricNet.score_topk: idx must be (N_q, k) = ({q.shape[0]}, k), got "
                f"{tuple(idx.shape)}"
            )
        nq, k, dim = q.shape[0], idx.shape[1], q.shape[1]
        out = q.new_empty(nq, k)
        if nq == 0 or k == 0:
            return out
        qb = max(1, int(pair_chunk) // k)
        n_max = min(qb, nq) * k
        layers, bufs = self._eval_layers(), self._buffers_for(n_max, q)
        f_buf = q.new_empty(n_max, dim)
        for s in range(0, nq, qb):
            qq = q[s : s + qb]
            f = f_buf[: qq.shape[0] * k]
            torch.index_select(g, 0, idx[s : s + qb].reshape(-1), out=f)
            f.view(qq.shape[0], k, dim).sub_(qq.unsqueeze(1)).pow_(2)
            out[s : s + qb] = self._eval_logits(f, layers, bufs).view(qq.shape[0], k)
        return out

    @torch.no_grad()
    def score_matrix(
        self, q: torch.Tensor, g: torch.Tensor, pair_chunk: int = 16384
    ) -> torch.Tensor:
        """Eval-mode logits ``(N_q, N_g)`` of every query-gallery pair, in blocks of at most
        ``pair_chunk`` pairs."""
        if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
            raise ValueError(
                f"MetricNet.score_matrix: need (N_q, D) and (N_g, D) features, got "
                f"{tuple(q.shape)} and {tuple(g.shape)}"
            )
        nq, ng, dim = q.shape[0], g.shape[0], q.shape[1]
        out = q.new_empty(nq, ng)
        if nq == 0 or ng == 0:
            return out
        chunk = max(1, int(pair_chunk))
        gb = min(ng, chunk)
        qb = max(1, chunk // gb)
        n_max = min(qb, nq) * gb
        layers, bufs = self._eval_layers(), self._buffers_for(n_max, q)
        f_buf = q.new_empty(n_max, dim)
        for qs in range(0, nq, qb):
            qq = q[qs : qs + qb]
            for gs in range(0, ng, gb):
                gg = g[gs : gs + gb]
                f = f_buf[: qq.shape[0] * gg.shape[0]]
                torch.sub(
                    qq.unsqueeze(1), gg.unsqueeze(0), out=f.view(qq.shape[0], gg.shape[0], dim)
                )
                logits = self._eval_logits(f.pow_(2), layers, bufs)
                out[qs : qs + qb, gs : gs + gb] = logits.view(qq.shape[0], gg.shape[0])
        return out

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, hidden_dims={self.hidden_dims}, norm={self.norm}, "
            f"dp_rate={self.dp_rate}"
        )


# ----------------------------------------------------------------------------- #
# Pair mining
# ----------------------------------------------------------------------------- #
def _unique_pairs(a: torch.Tensor, b: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Canonical (min, max) unordered pairs without duplicates, sorted."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    keys = torch.unique(lo * n + hi)
    return keys // n, keys % n


def mine_pairs(
    pids: torch.Tensor,
    dist: torch.Tensor,
    negatives: str = "hard",
    num_negatives: int = 3,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive and negative sample pairs of one batch.

    Positives: every unordered pair ``i < j`` with the same pid. Negatives (different pids):
    ``"all"``: every unordered pair; ``"hard"``: for every sample, its ``num_negatives``
    nearest samples of other identities under ``dist``; ``"random"``: ``num_negatives``
    uniformly drawn other-identity samples per sample (torch's global RNG). Negative pairs are
    unordered and de-duplicated (``(i, j)`` and ``(j, i)`` count once).

    Args:
        pids: ``(B,)`` identity labels.
        dist: ``(B, B)`` distances (only used by ``"hard"``; no gradient needed).
        negatives: one of :data:`NEGATIVE_MINING_MODES`.
        num_negatives: negatives per sample for "hard" / "random".

    Returns:
        ``(idx_a, idx_b, labels)``: int64 ``(M,)`` indices with ``idx_a < idx_b`` and float
        labels (1 = same identity), positives first.

    Raises:
        ValueError: unknown mode or bad ``num_negatives``.
    """
    if negatives not in NEGATIVE_MINING_MODES:
        raise ValueError(
            f"MODEL.GMN.PAIRS.NEGATIVES must be one of {NEGATIVE_MINING_MODES}, got '{negatives}'"
        )
    if negatives != "all" and int(num_negatives) < 1:
        raise ValueError(f"MODEL.GMN.PAIRS.NUM_NEGATIVES must be >= 1, got {num_negatives}")
    n = pids.shape[0]
    dev = pids.device
    same = pids.view(n, 1) == pids.view(1, n)
    upper = torch.ones(n, n, dtype=torch.bool, device=dev).triu(1)
    pa, pb = (same & upper).nonzero(as_tuple=True)
    diff = ~same
    if negatives == "all":
        na, nb = (diff & upper).nonzero(as_tuple=True)
    else:
        k = min(int(num_negatives), n)
        if negatives == "hard":
            d = dist.detach().masked_fill(~diff, float("inf"))
            order = d.topk(k, dim=1, largest=False).indices
        else:
            noise = torch.rand(n, n).to(dev).masked_fill(~diff, float("inf"))
            order = noise.topk(k, dim=1, largest=False).indices
        anchors = torch.arange(n, device=dev).unsqueeze(1).expand(n, k)
        valid = diff.gather(1, order)  # fewer than k negatives: drop the masked picks
        na, nb = _unique_pairs(anchors[valid], order[valid], n)
    idx_a = torch.cat([pa, na])
    idx_b = torch.cat([pb, nb])
    labels = torch.cat([torch.ones(pa.numel(), device=dev), torch.zeros(na.numel(), device=dev)])
    return idx_a, idx_b, labels


def pair_identity_keys(pid_a: torch.Tensor, pid_b: torch.Tensor) -> torch.Tensor:
    """Integer key of each pair's pair-identity ``{pid_a, pid_b}`` (order-free, since
    ``f_sp`` is symmetric in its two samples): equal keys <=> same identity pair."""
    lo, hi = torch.minimum(pid_a, pid_b).long(), torch.maximum(pid_a, pid_b).long()
    if lo.numel() and int(lo.min()) < 0:
        raise ValueError("pair_identity_keys: pids must be >= 0")
    base = int(hi.max()) + 1 if hi.numel() else 1
    return lo * base + hi
