"""M3L's meta-update as a trainer (``TRAINER.NAME: MetaTrainer``).

One iteration of :class:`MetaStepTrainer` (Zhao et al., CVPR 2021, Alg. 1, Eq. 1, 8-10):

1. draw the meta-test domain ``t`` (uniform over the ``N_S`` sources) from a generator seeded
   with ``(seed, iteration)``: identical on every process and reproduced exactly by a resume;
2. ``L_mtr(theta)``: the model's ``"meta_train"`` stage on the other ``N_S - 1`` domain
   batches (mean over domains of triplet + identification, Eq. 8-9; MetaBN saves their
   statistics);
3. ``g = dL_mtr/dtheta`` with ``create_graph=True`` and
   ``theta' = theta - alpha * AdamStep(g + wd * theta)``: one step of a *fresh* Adam (zero
   moments, step-1 bias corrections), written functionally so that theta' stays a
   differentiable function of theta (no copy of the model);
4. ``L_mte(theta')``: ``torch.func.functional_call`` of the model with theta' on the
   meta-test batch, ``"meta_test"`` stage (MetaBN mixing, Eq. 10);
5. the real optimiser (Adam, lr beta) steps on ``d(L_mtr(theta) + L_mte(theta'))/dtheta``,
   which contains the second-order terms through theta'(theta). ``outer_gradient="authors"``
   (default, the authors' released code) builds theta' on a *detached* copy of theta,
   ``theta' = sg(theta) - alpha * step(g(theta))``, so L_mte reaches theta only through ``g``
   (the second-order term); ``"full"`` builds theta' from theta itself (the first-order term
   ``dL_mte/dtheta'`` as well);
6. the memories are momentum-updated (Eq. 2) after the step (``MODEL.M3L.MEMORY_UPDATE``).

Numerical care: with ``sq_eps = 0``, ``sqrt(v) / sqrt(1 - b2)`` is computed as ``|g|``, so a
zero gradient entry gives a zero, not ``inf * 0 = NaN``, derivative. The exact
fresh-Adam step ``g / (|g| + eps)`` has the derivative ``eps / (|g| + eps)^2``, which spikes to
``1 / eps`` for near-zero gradients and lets those coordinates dominate the second-order term
(training stalls); by default (``MODEL.M3L.INNER_ADAM_SQ_EPS = 1e-8``) the second moment gets
the authors' ``+1e-8`` before the square root, which bounds that derivative. The summed
gradient norm is checked after the backward pass and a
:class:`~reid_plugins.engine.NonFiniteLossError` names the offending parameters.

With ``MODEL.M3L.META_LEARNING = False`` an iteration is the paper's baseline: the losses of
all domains averaged, one ordinary optimiser step, then the same memory update.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.func import functional_call

from reid_plugins.engine.defaults import TRAINER_REGISTRY, DefaultTrainer
from reid_plugins.engine.train_loop import NonFiniteLossError, SimpleTrainer
from reid_plugins.solver import build_grad_clipper
from reid_plugins.utils import comm
from reid_plugins.utils.events import get_event_storage

__all__ = [
    "MetaStepTrainer",
    "MetaTrainer",
    "fresh_adam_step",
    "sgd_step",
    "choose_meta_test_domain",
]

logger = logging.getLogger(__name__)

MEMORY_UPDATE_MODES = ("forward", "batch")
OUTER_GRADIENTS = ("authors", "full")
INNER_OPTIMIZERS = ("adam", "sgd")


def fresh_adam_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[Optional[torch.Tensor]],
    *,
    lrs: Sequence[float],
    weight_decays: Sequence[float],
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    sq_eps: float = 0.0,
) -> List[torch.Tensor]:
    """One step of a freshly created ``torch.optim.Adam`` (L2 weight decay), functionally.

    For each parameter ``p`` with gradient ``g`` (``None`` = no gradient: ``p`` is returned
    unchanged, as ``torch.optim.Adam`` skips it)::

        g <- g + wd * p;  m = (1 - b1) g;  v = (1 - b2) g^2 + sq_eps
        p' = p - lr / (1 - b1) * m / (sqrt(v) / sqrt(1 - b2) + eps)
           = p - lr * g / (sqrt(g^2 + sq_eps / (1 - b2)) + eps)

    i.e. ``p - lr * g / (|g| + eps)`` for ``sq_eps = 0`` (computed with ``|g|``, whose
    derivative is 0, not ``inf * 0 = NaN``, where ``g == 0``). Every operation is differentiable,
    so ``p'`` depends on ``p`` through ``g`` when ``g`` was computed with ``create_graph``.

    Args:
        params, grads: parameters and their gradients (same order).
        lrs, weight_decays: per-parameter learning rate and L2 weight decay.
        betas, eps: Adam's coefficients.
        sq_eps: constant added to the second moment before the square root (0 = exact Adam;
            the authors' code, and ``MODEL.M3L.INNER_ADAM_SQ_EPS`` by default, use 1e-8, which
            bounds the step's derivative).

    Returns:
        The updated tensors p' (in order).
    """
    # Algebraically identical to torch.optim.Adam's first step, with fewer operations (every
    # one of them is differentiated twice by the meta-gradient):
    #   lr / (1 - b1) * m = lr * g  and  sqrt(v) / sqrt(1 - b2) = sqrt(g^2 + sq_eps / (1 - b2)).
    # For sq_eps = 0 the root is |g|, whose derivative sign(g) is 0 (not NaN) where g == 0.
    # ``betas[0]`` cancels out of a fresh step.
    c = float(sq_eps) / (1.0 - float(betas[1]))
    out = []
    for p, g, lr, wd in zip(params, grads, lrs, weight_decays):
        if g is None:
            out.append(p)
            continue
        if wd != 0:
            g = torch.add(g, p, alpha=wd)
        root = (g * g + c).sqrt() if c > 0 else g.abs()
        out.append(torch.addcdiv(p, g, root + eps, value=-lr))
    return out


def sgd_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[Optional[torch.Tensor]],
    *,
    lrs: Sequence[float],
    weight_decays: Sequence[float],
) -> List[torch.Tensor]:
    """``p - lr * (g + wd * p)`` per parameter (``g is None``: unchanged), differentiable."""
    out = []
    for p, g, lr, wd in zip(params, grads, lrs, weight_decays):
        if g is None:
            out.append(p)
            continue
        out.append(p - lr * (g + wd * p if wd != 0 else g))
    return out


def choose_meta_test_domain(num_domains: int, seed: int, iteration: int) -> int:
    """Uniform domain index drawn from a generator seeded with ``(seed, iteration)``."""
    gen = torch.Generator()
    gen.manual_seed((int(seed) * 1_000_003 + int(iteration) * 7_919 + 17) % (2**63 - 1))
    return int(torch.randint(num_domains, (1,), generator=gen))


def _prefixed(loss_dict: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {
        f"loss_{prefix}_{k[len('loss_'):] if k.startswith('loss_') else k}": v
        for k, v in loss_dict.items()
    }


class MetaStepTrainer(SimpleTrainer):
    """``run_step`` = one M3L meta-iteration (module docstring) or one baseline iteration.

    The model must accept ``model(batches, stage=..., update_memory=False, collector=...)``
    with stages ``"standard"``, ``"meta_train"``, ``"meta_test"`` (like
    :class:`~reid_plugins.modeling.meta_arch.M3L`) and may implement
    ``update_memories_from_forward(batches)`` / ``update_memories_from_features(collected)``.
    A DDP-wrapped model is unwrapped (its forward is never used, so its reducer stays idle);
    gradients are then averaged over processes explicitly.

    Args:
        model: the model (or its DDP wrapper), in training mode.
        data_loader: yields ``[batch_domain0, batch_domain1, ...]`` (``DATALOADER.MULTI_SOURCE``).
        optimizer: the outer optimiser (lr beta); its param groups also give the inner step's
            per-parameter weight decay and LR multipliers.
        meta_learning: False = baseline iterations.
        inner_optimizer: ``"adam"`` (fresh Adam step) or ``"sgd"``.
        inner_lr: alpha.
        base_lr: ``SOLVER.BASE_LR``; with ``inner_lr_follows_schedule`` each group's inner lr
            is ``inner_lr * group_lr / base_lr`` (warm-up, decays and bias factors).
        inner_lr_follows_schedule: see above; False = constant ``inner_lr``.
        inner_betas, inner_eps, inner_sq_eps: see :func:`fresh_adam_step`.
        inner_weight_decay: L2 weight decay of the inner step; < 0 = each group's own.
        outer_gradient: ``"authors"`` (theta' built on a detached copy of theta: L_mte
            reaches theta only through the inner gradient) or ``"full"`` (theta' built from
            theta: also the first-order term of L_mte). Ignored with ``first_order``.
        first_order: drop the second-order terms (theta' built from a detached step; L_mte's
            gradient at theta' is applied to theta).
        memory_update: ``"forward"`` (new no-grad forward of the updated model) or
            ``"batch"`` (features of the iteration's own forward passes).
        seed: seed of the meta-test domain draws (same on every process).
        grad_clipper: optional ``fn(parameters)``.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        *,
        meta_learning: bool = True,
        inner_optimizer: str = "adam",
        inner_lr: float = 3.5e-4,
        base_lr: float = 3.5e-4,
        inner_lr_follows_schedule: bool = True,
        inner_betas: Sequence[float] = (0.9, 0.999),
        inner_eps: float = 1e-8,
        inner_sq_eps: float = 1e-8,
        inner_weight_decay: float = -1.0,
        first_order: bool = False,
        outer_gradient: str = "authors",
        memory_update: str = "forward",
        seed: int = 0,
        grad_clipper: Optional[Callable] = None,
    ) -> None:
        super().__init__(model, data_loader, optimizer, grad_clipper=grad_clipper)
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(
                f"MODEL.M3L.INNER_OPTIMIZER must be one of {INNER_OPTIMIZERS}, "
                f"got {inner_optimizer!r}"
            )
        if memory_update not in MEMORY_UPDATE_MODES:
            raise ValueError(
                f"MODEL.M3L.MEMORY_UPDATE must be one of {MEMORY_UPDATE_MODES}, "
                f"got {memory_update!r}"
            )
        if outer_gradient not in OUTER_GRADIENTS:
            raise ValueError(
                f"MODEL.M3L.OUTER_GRADIENT must be one of {OUTER_GRADIENTS}, "
                f"got {outer_gradient!r}"
            )
        if inner_lr < 0 or base_lr <= 0:
            raise ValueError(
                f"MODEL.M3L.INNER_LR must be >= 0 and SOLVER.BASE_LR > 0, got "
                f"{inner_lr} and {base_lr}"
            )
        self.module = comm.unwrap_model(model)
        self.meta_learning = bool(meta_learning)
        self.inner_optimizer = inner_optimizer
        self.inner_lr = float(inner_lr)
        self.base_lr = float(base_lr)
        self.inner_lr_follows_schedule = bool(inner_lr_follows_schedule)
        self.inner_betas = (float(inner_betas[0]), float(inner_betas[1]))
        self.inner_eps = float(inner_eps)
        self.inner_sq_eps = float(inner_sq_eps)
        self.inner_weight_decay = float(inner_weight_decay)
        self.first_order = bool(first_order)
        self.outer_gradient = outer_gradient
        self.memory_update = memory_update
        self.seed = int(seed)
        self.last_meta_test_domain: Optional[int] = None

    # ------------------------------------------------------------------ helpers
    def trainable(self) -> Tuple[List[str], List[torch.Tensor]]:
        """Names and tensors of the parameters the optimiser updates (model order)."""
        in_opt = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        named = [
            (n, p) for n, p in self.module.named_parameters() if p.requires_grad and id(p) in in_opt
        ]
        return [n for n, _ in named], [p for _, p in named]

    def inner_hparams(self, params: Sequence[torch.Tensor]) -> Tuple[List[float], List[float]]:
        """Per-parameter inner learning rates (alpha, scheduled) and weight decays."""
        lookup = {}
        for group in self.optimizer.param_groups:
            scale = group["lr"] / self.base_lr if self.inner_lr_follows_schedule else 1.0
            wd = (
                group.get("weight_decay", 0.0)
                if self.inner_weight_decay < 0
                else (self.inner_weight_decay)
            )
            for p in group["params"]:
                lookup[id(p)] = (self.inner_lr * scale, float(wd))
        lrs, wds = zip(*(lookup[id(p)] for p in params)) if params else ((), ())
        return list(lrs), list(wds)

    def inner_update(
        self, loss: torch.Tensor, names: Sequence[str], params: Sequence[torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """theta' = one inner step on ``loss`` (graph kept unless ``first_order``)."""
        # The graph of ``loss`` is kept: the outer backward also goes through L_mtr(theta).
        # (Back-propagating L_mte alone and adding these gradients detached saves nothing: the
        # outer backward's pass through the meta-train forward graph serves both the
        # first-order term of L_mtr and the Hessian-vector product; measured.)
        grads = torch.autograd.grad(
            loss,
            list(params),
            create_graph=not self.first_order,
            retain_graph=True,
            allow_unused=True,
        )
        lrs, wds = self.inner_hparams(params)
        # authors: theta' on a detached copy of theta (weight decay too, as their code adds
        # wd * theta of the copy), so L_mte reaches theta only through the graph of ``grads``.
        # Parameters L_mtr does not use (no inner gradient, e.g. the meta-test domain's
        # fc_parallel classifier) keep theta itself, so L_mte still trains them.
        if self.outer_gradient == "authors" and not self.first_order:
            base = [p.detach() if g is not None else p for p, g in zip(params, grads)]
        else:
            base = list(params)
        if self.inner_optimizer == "adam":
            new = fresh_adam_step(
                base,
                grads,
                lrs=lrs,
                weight_decays=wds,
                betas=self.inner_betas,
                eps=self.inner_eps,
                sq_eps=self.inner_sq_eps,
            )
        else:
            new = sgd_step(base, grads, lrs=lrs, weight_decays=wds)
        if self.first_order:
            new = [p - (p - q).detach() for p, q in zip(params, new)]
        return dict(zip(names, new))

    def _check_and_reduce_grads(self, names: Sequence[str], params: Sequence[torch.Tensor]):
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.stack([g.detach().norm() for g in grads]).norm() if grads else None
        if norm is not None and not torch.isfinite(norm):
            bad = [
                n
                for n, p in zip(names, params)
                if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
            raise NonFiniteLossError(
                f"Meta-gradient became non-finite at iteration {self.iter} in {len(bad)} "
                f"parameter(s), e.g. {bad[:5]}. Lower MODEL.M3L.INNER_LR / SOLVER.BASE_LR, or "
                "set MODEL.M3L.INNER_ADAM_SQ_EPS (e.g. 1e-8) to bound the inner Adam step's "
                "derivative."
            )
        world = comm.get_world_size()
        if world > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(world)
        return norm

    def _finish(self, loss_dict, data_time, names, params, data, collected, extra=None):
        total = self.sum_losses(loss_dict)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = self._check_and_reduce_grads(names, params)
        self.after_backward()
        if self.grad_clipper is not None:
            self.grad_clipper(params)
        self.write_metrics(loss_dict, data_time)
        if comm.is_main_process():
            storage = get_event_storage()
            if norm is not None:
                storage.put_scalar("grad_norm", float(norm))
            for k, v in (extra or {}).items():
                storage.put_scalar(k, v, smoothing_hint=False)
        self.optimizer.step()
        self.update_memories(data, collected)

    def update_memories(self, data, collected) -> None:
        """Eq. 2 after the optimiser step, per ``memory_update``."""
        if self.memory_update == "batch":
            fn = getattr(self.module, "update_memories_from_features", None)
            if fn is not None and collected:
                fn(collected)
        else:
            fn = getattr(self.module, "update_memories_from_forward", None)
            if fn is not None:
                with torch.no_grad():
                    fn(data)

    # ------------------------------------------------------------------ the step
    def run_step(self) -> None:
        assert self.module.training, "MetaStepTrainer: model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.meta_learning:
            self._meta_step(data, data_time)
        else:
            self._standard_step(data, data_time)

    def _standard_step(self, data, data_time: float) -> None:
        names, params = self.trainable()
        collected: list = []
        loss_dict = self.module(
            data,
            stage="standard",
            update_memory=False,
            collector=collected if self.memory_update == "batch" else None,
        )
        self._finish(loss_dict, data_time, names, params, data, collected)

    def _meta_step(self, data, data_time: float) -> None:
        if not isinstance(data, (list, tuple)) or not data or isinstance(data[0], dict):
            raise ValueError(
                "M3L meta-learning needs one batch per source domain: set "
                "DATALOADER.MULTI_SOURCE: True with >= 2 DATASETS.TRAIN sets (or "
                "MODEL.M3L.META_LEARNING: False for the baseline)"
            )
        num_domains = len(data)
        if num_domains < 2:
            raise ValueError(
                f"M3L meta-learning needs >= 2 source domains, got {num_domains} "
                "(DATASETS.TRAIN); use MODEL.M3L.META_LEARNING: False for a single source"
            )
        t = choose_meta_test_domain(num_domains, self.seed, self.iter)
        self.last_meta_test_domain = t
        collect = self.memory_update == "batch"
        collected: list = []
        names, params = self.trainable()

        mtr = self.module(
            [data[d] for d in range(num_domains) if d != t],
            stage="meta_train",
            update_memory=False,
            collector=collected if collect else None,
        )
        mtr = _prefixed(mtr, "mtr")
        l_mtr = self.sum_losses(mtr)
        new_params = self.inner_update(l_mtr, names, params)
        mte = functional_call(
            self.module,
            new_params,
            (data[t],),
            {
                "stage": "meta_test",
                "update_memory": False,
                "collector": collected if collect else None,
            },
        )
        mte = _prefixed(mte, "mte")
        self._finish(
            {**mtr, **mte},
            data_time,
            names,
            params,
            data,
            collected,
            extra={"meta_test_domain": float(t)},
        )


@TRAINER_REGISTRY.register()
class MetaTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` whose iterations are M3L meta-updates (:class:`MetaStepTrainer`).

    Configured by ``MODEL.M3L.*`` (see :func:`reid_plugins.config.add_m3l_config`); select with
    ``TRAINER.NAME: MetaTrainer``. Everything else (hooks, memory initialisation, checkpoints,
    resume, evaluation) is :class:`DefaultTrainer`'s.
    """

    SUPPORTS_AMP = False

    def build_step_trainer(self, cfg, model, data_loader, optimizer) -> MetaStepTrainer:
        if "M3L" not in cfg.MODEL:
            raise KeyError(
                "MetaTrainer needs cfg.MODEL.M3L: call add_m3l_config(cfg) (or "
                "add_all_configs) before merging the config"
            )
        m = cfg.MODEL.M3L
        if cfg.SOLVER.AMP.ENABLED is True:  # "auto" resolves to float32 (SUPPORTS_AMP)
            raise ValueError(
                "SOLVER.AMP.ENABLED is not supported by TRAINER.NAME MetaTrainer (M3L's "
                "second-order meta-update runs in float32); set SOLVER.AMP.ENABLED False"
            )
        seed = cfg.SEED if cfg.SEED >= 0 else int(comm.shared_random_seed())
        if m.META_LEARNING and not cfg.DATALOADER.MULTI_SOURCE:
            raise ValueError(
                "MetaTrainer with MODEL.M3L.META_LEARNING needs "
                "DATALOADER.MULTI_SOURCE: True (one batch per source domain)"
            )
        if m.META_LEARNING and len(cfg.DATASETS.TRAIN) < 2:
            raise ValueError(
                f"M3L meta-learning needs >= 2 source domains in DATASETS.TRAIN, "
                f"got {list(cfg.DATASETS.TRAIN)}"
            )
        return MetaStepTrainer(
            model,
            data_loader,
            optimizer,
            meta_learning=m.META_LEARNING,
            inner_optimizer=m.INNER_OPTIMIZER,
            inner_lr=m.INNER_LR,
            base_lr=cfg.SOLVER.BASE_LR,
            inner_lr_follows_schedule=m.INNER_LR_FOLLOWS_SCHEDULE,
            inner_betas=m.INNER_ADAM_BETAS,
            inner_eps=m.INNER_ADAM_EPS,
            inner_sq_eps=m.INNER_ADAM_SQ_EPS,
            inner_weight_decay=m.INNER_WEIGHT_DECAY,
            first_order=m.FIRST_ORDER,
            outer_gradient=m.OUTER_GRADIENT,
            memory_update=m.MEMORY_UPDATE,
            seed=seed,
            grad_clipper=build_grad_clipper(cfg),
        )

    def state_dict(self) -> dict:
        """DefaultTrainer's state plus the seed of the meta-test domain draws (so a resume
        draws the same domains even when ``SEED`` < 0 picked a random seed)."""
        sd = super().state_dict()
        sd["meta_test_seed"] = self._trainer.seed
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "meta_test_seed" in state_dict:
            self._trainer.seed = int(state_dict["meta_test_seed"])
