"""Config subtree of GMN (Generalizable Metric Network, Qi et al., arXiv 2306.11991).

``add_gmn_config(cfg)`` adds ``cfg.MODEL.GMN`` with documented defaults; it is idempotent (a
config that already has the subtree is left untouched) and registered with
:func:`reid_plugins.config.register_config_adder`, so ``add_all_configs`` applies it.
Which defaults come from the paper and which are our own choices is recorded in
``projects/gmn/README.md``.
"""

from __future__ import annotations

from . import register_config_adder
from .config import CfgNode as CN

__all__ = ["add_gmn_config"]


@register_config_adder
def add_gmn_config(cfg):
    """Add ``cfg.MODEL.GMN`` (no-op when present). Returns ``cfg``."""
    if "GMN" in cfg.MODEL:
        return cfg
    _C = cfg
    _C.MODEL.GMN = CN()

    # M-Net: MLP on the sample-pair feature f_sp = (p - q) * (p - q) of L2-normalised
    # post-BN features; outputs a same-identity logit (probability via sigmoid).
    _C.MODEL.GMN.MNET = CN()
    # False = no M-Net at all (the "w/o M-Net" ablation: backbone + BNNeck, CE + triplet,
    # cosine ranking).
    _C.MODEL.GMN.MNET.ENABLED = True
    # Widths of the hidden FC[-BN]-ReLU blocks; a final FC maps the last width to 1 logit.
    # The last hidden output is the "M-Net embedding" used by the PIC loss. The first width
    # sets the test cost: M-Net on k pairs per query costs ~ k * HIDDEN_DIMS[0] / N_gallery
    # times the cosine matrix product (k = 100, 256 -> 1.6x on Market-1501).
    _C.MODEL.GMN.MNET.HIDDEN_DIMS = [256, 128]
    # Normalisation inside the hidden blocks: "BN" (BatchNorm1d) or "none".
    _C.MODEL.GMN.MNET.NORM = "BN"

    # Dropout-based Perturbation: dropout on the sample-pair feature at the M-Net input,
    # switched on by a hook (GMNTrainer's DPWarmupHook) once training reaches WARMUP_ITERS.
    _C.MODEL.GMN.DP = CN()
    _C.MODEL.GMN.DP.ENABLED = True
    # Dropout probability of each sample-pair feature element.
    _C.MODEL.GMN.DP.RATE = 0.2
    # Iteration from which DP is active (schedules in epochs: epochs x iterations/epoch).
    _C.MODEL.GMN.DP.WARMUP_ITERS = 2000

    # Pairs mined from each P x K (domain) batch for L_gmn and L_pic.
    _C.MODEL.GMN.PAIRS = CN()
    # Every same-identity pair is a positive. Negatives: "all" (every different-identity
    # pair), "hard" (per anchor the NUM_NEGATIVES closest other identities' samples) or
    # "random" (per anchor NUM_NEGATIVES random other-identity samples).
    _C.MODEL.GMN.PAIRS.NEGATIVES = "hard"
    # Negatives per anchor for "hard" / "random" (duplicate unordered pairs are merged).
    _C.MODEL.GMN.PAIRS.NUM_NEGATIVES = 3
    # Detach the instance features before forming pairs (M-Net losses then train M-Net only).
    _C.MODEL.GMN.PAIRS.DETACH = False

    _C.MODEL.GMN.LOSSES = CN()
    # L_gmn: binary cross-entropy of the M-Net logits (label 1 = same identity).
    _C.MODEL.GMN.LOSSES.BCE = CN()
    _C.MODEL.GMN.LOSSES.BCE.ENABLED = True
    _C.MODEL.GMN.LOSSES.BCE.WEIGHT = 1.0
    # True: 0.5 * (mean over positive pairs + mean over negative pairs); False: plain mean.
    _C.MODEL.GMN.LOSSES.BCE.BALANCED = True
    # L_pic: pair-identity centre loss on the M-Net embedding; WEIGHT is lambda.
    _C.MODEL.GMN.LOSSES.PIC = CN()
    _C.MODEL.GMN.LOSSES.PIC.ENABLED = True
    _C.MODEL.GMN.LOSSES.PIC.WEIGHT = 0.1
    # L2-normalise the M-Net embedding before measuring distances to the centres.
    _C.MODEL.GMN.LOSSES.PIC.NORM_FEAT = True

    # Test-time scoring (ReIDEvaluator's pairwise_fn = GMN.pairwise_distance).
    _C.MODEL.GMN.TEST = CN()
    # True = rank with the fused M-Net distance; False = plain cosine ranking of the features.
    _C.MODEL.GMN.TEST.ENABLED = True
    # 0 = run M-Net on every query-gallery pair; k > 0 = only on each query's k nearest
    # gallery items by instance distance (the others keep their instance ranking after them).
    _C.MODEL.GMN.TEST.TOPK = 0
    # d = (1 - w) * (1 - cos) / 2 + w * (1 - sigmoid(M-Net logit)); w = FUSION_WEIGHT.
    _C.MODEL.GMN.TEST.FUSION_WEIGHT = 0.5
    # Sample pairs per M-Net forward at test time (bounds memory: ~PAIR_CHUNK x D floats).
    _C.MODEL.GMN.TEST.PAIR_CHUNK = 16384
    return cfg
