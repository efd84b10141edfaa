"""Config subtree of GMN (Generalizable Metric Network, Qi et al., arXiv 2306.11991).

``add_gmn_config(cfg)`` adds ``cfg.MODEL.GMN`` with documented defaults; it is idempotent (a
config that already has the subtree is left untouched) and registered with
:func:`reid_plugins.config.register_config_adder`, so ``add_all_configs`` applies it.
Which defaults come from the paper and which are our own choices is recorded in
``projects/gmn/README.md``.
"""

from __future__ import annotations

from reid_plugins.config import CfgNode as CN
from reid_plugins.config import add_subtree, register_config_adder

__all__ = ["add_gmn_config"]


def _gmn_node() -> CN:
    gmn = CN()

    # M-Net: MLP on the sample-pair feature f_sp = (p - q) * (p - q) of L2-normalised
    # post-BN features; outputs a same-identity logit (probability via sigmoid).
    gmn.MNET = CN()
    # False = no M-Net at all (the "w/o M-Net" ablation: backbone + BNNeck, CE + triplet,
    # cosine ranking).
    gmn.MNET.ENABLED = True
    # Widths of the hidden FC[-BN]-ReLU blocks; a final FC maps the last width to 1 logit.
    # The last hidden output is the "M-Net embedding" used by the PIC loss. The first width
    # sets the test cost: M-Net on k pairs per query costs ~ k * HIDDEN_DIMS[0] / N_gallery
    # times the cosine matrix product (k = 100, 256 -> 1.6x on Market-1501).
    gmn.MNET.HIDDEN_DIMS = [256, 128]
    # Normalisation inside the hidden blocks: "BN" (BatchNorm1d) or "none".
    gmn.MNET.NORM = "BN"

    # Dropout-based Perturbation: dropout on the sample-pair feature at the M-Net input,
    # switched on by a hook (GMNTrainer's DPWarmupHook) once training reaches WARMUP_ITERS.
    gmn.DP = CN()
    gmn.DP.ENABLED = True
    # Dropout probability of each sample-pair feature element.
    gmn.DP.RATE = 0.2
    # Iteration from which DP is active (schedules in epochs: epochs x iterations/epoch).
    gmn.DP.WARMUP_ITERS = 2000

    # Pairs mined from each P x K (domain) batch for L_gmn and L_pic.
    gmn.PAIRS = CN()
    # Every same-identity pair is a positive. Negatives: "all" (every different-identity
    # pair), "hard" (per anchor the NUM_NEGATIVES closest other identities' samples) or
    # "random" (per anchor NUM_NEGATIVES random other-identity samples).
    gmn.PAIRS.NEGATIVES = "hard"
    # Negatives per anchor for "hard" / "random" (duplicate unordered pairs are merged).
    gmn.PAIRS.NUM_NEGATIVES = 3
    # Detach the instance features before forming pairs (M-Net losses then train M-Net only).
    gmn.PAIRS.DETACH = False

    gmn.LOSSES = CN()
    # L_gmn: binary cross-entropy of the M-Net logits (label 1 = same identity).
    gmn.LOSSES.BCE = CN()
    gmn.LOSSES.BCE.ENABLED = True
    gmn.LOSSES.BCE.WEIGHT = 1.0
    # True: 0.5 * (mean over positive pairs + mean over negative pairs); False: plain mean.
    gmn.LOSSES.BCE.BALANCED = True
    # L_pic: pair-identity centre loss on the M-Net embedding; WEIGHT is lambda.
    gmn.LOSSES.PIC = CN()
    gmn.LOSSES.PIC.ENABLED = True
    gmn.LOSSES.PIC.WEIGHT = 0.1
    # L2-normalise the M-Net embedding before measuring distances to the centres.
    gmn.LOSSES.PIC.NORM_FEAT = True

    # Test-time scoring (ReIDEvaluator's pairwise_fn = GMN.pairwise_distance).
    gmn.TEST = CN()
    # True = rank with the fused M-Net distance; False = plain cosine ranking of the features.
    gmn.TEST.ENABLED = True
    # 0 = run M-Net on every query-gallery pair; k > 0 = only on each query's k nearest
    # gallery items by instance distance (the others keep their instance ranking after them).
    gmn.TEST.TOPK = 0
    # d = (1 - w) * (1 - cos) / 2 + w * (1 - sigmoid(M-Net logit)); w = FUSION_WEIGHT.
    gmn.TEST.FUSION_WEIGHT = 0.5
    # Sample pairs per M-Net forward at test time (bounds memory: ~PAIR_CHUNK x D floats).
    gmn.TEST.PAIR_CHUNK = 16384
    return gmn


@register_config_adder
def add_gmn_config(cfg: CN) -> CN:
    """Add the missing keys of ``cfg.MODEL.GMN`` (see the comments above). Returns ``cfg``."""
    add_subtree(cfg.MODEL, "GMN", _gmn_node())
    return cfg
