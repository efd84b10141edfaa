"""Tiny M3L models and domain batches shared by the M3L model and meta-trainer tests.

Imported as ``from tests.methods.m3l._helpers import ...`` (the repository root is importable when
pytest runs from it, as ``python -m pytest`` does).
"""

import copy

import torch

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.methods.m3l import M3L, M3LMemoryLoss, MetaBNHead
from reid_plugins.modeling.backbone import build_backbone
from reid_plugins.modeling.heads import EmbeddingHead
from reid_plugins.modeling.losses import TripletLoss
from reid_plugins.modeling.meta_arch import ReIDBaseline

IDS, DOMAINS = 3, 3  # identities per domain, source domains
FEAT_DIM = 64  # output channels of the width-8 ResNet-18 of ``tiny_cfg``


def tiny_cfg():
    """Full config (all method keys) with a width-8 ResNet-18 on the CPU."""
    cfg = add_all_configs(get_cfg())
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.BASE_WIDTH = 8
    cfg.MODEL.BACKBONE.FROM_SCRATCH = True  # tiny random network on purpose
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def tiny_m3l(*, seed=0, memory=True, triplet=True, **kw):
    """M3L on the tiny ResNet with a MetaBN head, seeded.

    Args:
        seed: ``torch.manual_seed`` before building (backbone first, then the memories).
        memory: per-domain memories (``IDS`` rows each, random initial features) or None.
        triplet: triplet loss or None.
        **kw: further M3L constructor arguments (e.g. ``metabn``).
    """
    torch.manual_seed(seed)
    cfg = tiny_cfg()
    backbone = build_backbone(cfg)
    mem = None
    if memory:
        mem = M3LMemoryLoss(num_pids_per_domain=[IDS] * DOMAINS, feat_dim=FEAT_DIM)
        for d in range(DOMAINS):
            mem.initialize(d, torch.randn(IDS, FEAT_DIM), torch.arange(IDS))
    return M3L(
        backbone=backbone,
        head=MetaBNHead(feat_dim=FEAT_DIM),
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
        triplet_loss=TripletLoss() if triplet else None,
        memory_loss=mem,
        **kw,
    )


def baseline_twin(m3l):
    """A ``ReIDBaseline`` (plain BNNeck, triplet + copied memories) with ``m3l``'s weights."""
    base = ReIDBaseline(
        backbone=copy.deepcopy(m3l.backbone),
        head=EmbeddingHead(feat_dim=FEAT_DIM, cls_layer="none"),
        pixel_mean=m3l.pixel_mean.flatten().tolist(),
        pixel_std=m3l.pixel_std.flatten().tolist(),
        triplet_loss=TripletLoss(),
        memory_loss=copy.deepcopy(m3l.memory_loss),
    )
    base.load_state_dict(m3l.state_dict())
    # M3L's neck bias is trainable by default (the authors' code): train the twin's too
    base.head.bottleneck.bias.requires_grad_(m3l.head.bottleneck.bias.requires_grad)
    return base


def batch(domain, k=0, n=6):
    """``n`` random 32x16 images of domain ``domain`` (``IDS`` identities), seeded by
    ``(domain, k)``; records carry global ``pid``, ``domain_pid`` and ``domain``."""
    g = torch.Generator().manual_seed(1000 * domain + k)
    return [
        {
            "image": torch.rand(3, 32, 16, generator=g) * 255,
            "pid": domain * IDS + i % IDS,
            "domain_pid": i % IDS,
            "domain": domain,
        }
        for i in range(n)
    ]


def rank_stream(rank):
    """Endless multi-source batches of one process: iteration ``k`` of rank ``rank``."""
    k = 0
    while True:
        yield [batch(d, 100 * k + rank) for d in range(DOMAINS)]
        k += 1


def run_meta_iterations(rank, iters):
    """``iters`` M3L meta-iterations (``MEMORY_UPDATE: batch``) of a fresh ``tiny_m3l(seed=0)``
    (identical weights, memories and RNG state in every process) on ``rank``'s batches, in the
    current process group if any. Returns the model, the gradients the optimiser saw at every
    iteration (``{name: grad}``) and the meta-test domains."""
    from reid_plugins.methods.m3l.trainer import MetaStepTrainer
    from reid_plugins.solver import build_optimizer
    from reid_plugins.utils.events import EventStorage

    model = tiny_m3l(seed=0)
    model.train()
    trainer = MetaStepTrainer(
        model, rank_stream(rank), build_optimizer(tiny_cfg(), model), memory_update="batch"
    )
    names, params = trainer.trainable()
    grads, domains = [], []
    with EventStorage(0):
        for it in range(iters):
            trainer.iter = it
            trainer.run_step()
            grads.append({n: p.grad.detach().clone() for n, p in zip(names, params)})
            domains.append(trainer.last_meta_test_domain)
    return model, grads, domains


def m3l_ddp_worker(output_dir, iters=2):
    """:func:`run_meta_iterations` on this process' rank; writes ``rank<k>.pt`` with the
    gradients, the meta-test domains and the final state dict (memories included)."""
    import os

    from reid_plugins.utils import comm

    rank = comm.get_rank()
    model, grads, domains = run_meta_iterations(rank, iters)
    torch.save(
        {"grads": grads, "domains": domains, "state": model.state_dict()},
        os.path.join(output_dir, f"rank{rank}.pt"),
    )
