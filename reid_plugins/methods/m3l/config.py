"""Config subtree of M3L (Zhao et al., CVPR 2021): ``cfg.MODEL.M3L``.

:func:`add_m3l_config` adds the keys below (only the missing ones, so it is idempotent and
never overwrites values set earlier). Equation numbers refer to the paper
(CVPR 2021, arXiv 2012.00417).

The loss hyper-parameters are the shared ones: ``MODEL.LOSSES.TRIPLET.{MARGIN, WEIGHT,
NORM_FEAT}``, ``MODEL.LOSSES.MEMORY.{TEMP, MOMENTUM, WEIGHT}`` and, for the FC classifiers of
Table 5, ``MODEL.LOSSES.CE.{EPSILON, WEIGHT}``. Which losses M3L uses is decided by
``MODEL.M3L.LOSSES`` / ``MODEL.M3L.CLASSIFIER`` (the ``MODEL.LOSSES.*.ENABLED`` flags are
ignored by the ``M3L`` meta-architecture).
"""

from __future__ import annotations

from reid_plugins.config import CfgNode as CN
from reid_plugins.config import add_subtree, register_config_adder

__all__ = ["add_m3l_config"]


def _m3l_node() -> CN:
    m = CN()
    # Meta-learning (Eq. 1, Alg. 1): each iteration one random source domain is meta-test and
    # the others meta-train; the meta-test loss is computed on theta' (one inner step).
    # False = the paper's baseline (Table 3 first rows): identification + triplet losses
    # averaged over all source domains, one ordinary optimiser step.
    m.META_LEARNING = True
    # MetaBN (Sec. 3.4, Eq. 5-7) at the BNNeck in the meta-test pass. False = the meta-test
    # features go through the plain BNNeck (batch statistics), one feature per sample.
    m.METABN = True
    # Identification classifier (Table 5): "memory" = per-domain identity-centroid memories
    # (Eq. 2-3, non-parametric); "fc_global" = one FC layer over all source identities
    # (L_FCG); "fc_parallel" = one FC layer per source domain over its own identities (L_FCP).
    # The FC variants use cross-entropy with MODEL.LOSSES.CE.EPSILON label smoothing.
    m.CLASSIFIER = "memory"
    # Losses of both stages (Table 4): any non-empty subset of "id" (identification with
    # CLASSIFIER, i.e. the memory loss L_M by default; "memory" is accepted as its name when
    # CLASSIFIER is "memory") and "triplet" (batch-hard L_Tri, Eq. 4, on the pre-BN feature).
    m.LOSSES = ["id", "triplet"]
    # Inner-loop learning rate alpha (theta' = theta - alpha * step, Alg. 1 line 8).
    m.INNER_LR = 3.5e-4
    # Scale alpha like the outer LR schedule (warm-up from 0.1x, x0.1 decays), i.e. use
    # INNER_LR * lr_group / SOLVER.BASE_LR, as in the paper ("alpha and beta are initialised to
    # 3.5e-5 and increase linearly ... decayed by 0.1"). False = constant INNER_LR.
    m.INNER_LR_FOLLOWS_SCHEDULE = True
    # Inner step: "adam" = one step of a *fresh* Adam (zero moments, step-1 bias correction,
    # weight decay folded into the gradient, like the authors' code; ~ alpha * sign(g) for
    # gradients above ~3e-3, see INNER_ADAM_SQ_EPS); "sgd" = theta - alpha * (g + wd * theta).
    m.INNER_OPTIMIZER = "adam"
    # Betas and eps of the inner Adam step (torch.optim.Adam defaults).
    m.INNER_ADAM_BETAS = [0.9, 0.999]
    m.INNER_ADAM_EPS = 1e-8
    # Constant added to Adam's second moment before the square root, as the authors' code does
    # (1e-8). After the 1/(1-beta2) bias correction it floors the denominator at ~3.2e-3: the
    # step is ~ alpha * sign(g) for |g| >> 3e-3 and ~ alpha * g / 3.2e-3 below, and its
    # derivative stays bounded. 0 = the exact torch.optim.Adam step g / (|g| + eps), whose
    # derivative eps / (|g| + eps)^2 spikes to ~1/eps for near-zero gradients: the second-order
    # term is then dominated by those coordinates and training stalls (see projects/m3l/README).
    m.INNER_ADAM_SQ_EPS = 1e-8
    # Weight decay folded into the inner gradient; < 0 = the outer optimiser's value for each
    # parameter group (SOLVER.WEIGHT_DECAY / WEIGHT_DECAY_NORM).
    m.INNER_WEIGHT_DECAY = -1.0
    # How L_mte(theta') reaches theta in the outer gradient. "authors" = the authors' released
    # code (the code behind Table 2): theta' = stopgrad(theta) - alpha * step(g(theta)), built
    # on a detached copy of theta, so L_mte reaches theta only through the inner gradient g,
    # i.e. only the second-order term (the paper's "high-order gradient" remark). "full" =
    # theta' built from theta itself: the first-order term dL_mte/dtheta' as well.
    m.OUTER_GRADIENT = "authors"
    # True = first-order approximation (theta' built from detached gradients, no second-order
    # terms; cheaper, NOT the paper's method): L_mte's gradient at theta' is applied to theta
    # (OUTER_GRADIENT is then ignored: with the authors' detached theta' nothing would be left).
    # False = second-order meta-gradient.
    m.FIRST_ORDER = False
    # When/how the memories are momentum-updated (Eq. 2), always after the optimiser step:
    # "forward" = from a new no-grad forward of the updated model on the iteration's batches of
    # every domain (the authors' code; BN in training mode, BN running statistics left
    # unchanged by this extra pass); "batch" = from the (detached) features of the
    # iteration's own forward passes (meta-train: theta; meta-test: theta', plain BN of the
    # un-mixed feature), which saves one forward pass per domain.
    m.MEMORY_UPDATE = "forward"
    # Momentum-update rule of the memories (Eq. 2). "sequential" = the authors' code: sample by
    # sample in batch order, M[y] <- normalize(m M[y] + (1 - m) f) for each (f, y); "mean" =
    # the paper's Eq. 2: M[k] <- normalize(m M[k] + (1 - m) mean_{f in B_k} f) per identity.
    m.MEMORY_UPDATE_RULE = "sequential"
    # MetaBN mixing coefficient lambda ~ Beta(a, b) (Eq. 6; paper: Beta(1, 1)).
    m.METABN_MIX_BETA = [1.0, 1.0]
    # How many lambdas a meta-test pass draws: "shared" = one lambda for all N_S - 1 mixes (the
    # authors' code); "per_domain" = one lambda per mixed meta-train distribution (Eq. 6 read
    # per mix).
    m.METABN_LAMBDA = "shared"
    # Scale of the Gaussian z ~ N(mu_i, s_i) of Eq. 5: "var" = the saved batch variance itself
    # used as the scale, as the authors' code does (Normal(mean, var)); "std" = its square root
    # (the meta-train domain's feature spread, the paper's sigma_i).
    m.METABN_SAMPLE_SCALE = "var"
    # BNNeck (MetaBN) bias: True = trainable (the authors' code); False = frozen at 0 (the
    # BNNeck of Luo et al., which the paper's model description follows).
    m.NECK_BIAS_TRAINABLE = True
    return m


@register_config_adder
def add_m3l_config(cfg: CN) -> CN:
    """Add ``cfg.MODEL.M3L`` (see the module docstring); existing keys are left unchanged.

    Returns:
        ``cfg`` (modified in place).
    """
    add_subtree(cfg.MODEL, "M3L", _m3l_node())
    return cfg
