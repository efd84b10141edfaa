"""Tiny models and data streams for tests and smoke runs (importable by spawned processes).

Nothing here is used by the methods; it exists so that engine behaviour (hooks, resume,
DDP) can be tested quickly and deterministically on CPU.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from reid_plugins.config import get_cfg
from reid_plugins.engine.defaults import DefaultTrainer
from reid_plugins.modeling.meta_arch.build import META_ARCH_REGISTRY
from reid_plugins.utils import comm

__all__ = [
    "ToyClassifier",
    "ToyStream",
    "ToyTrainer",
    "load_tool",
    "register_toy_meta_arch",
    "toy_trainer_cfg",
]


class ToyClassifier(nn.Module):
    """Linear + dropout + BN classifier on flattened images.

    Train: ``{"loss_cls": CE}``; eval: ``[{"logits": ...}]`` per input. Contains dropout and
    BN so that RNG state and buffers matter for resume tests.

    Args:
        in_dim: flattened input size.
        num_classes: output classes.
        dropout: dropout probability.
    """

    def __init__(self, *, in_dim: int = 12, num_classes: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(16, num_classes)

    @classmethod
    def from_config(cls, cfg) -> "ToyClassifier":
        return cls(in_dim=12, num_classes=3)

    @property
    def device(self) -> torch.device:
        return self.fc1.weight.device

    def forward(self, batched_inputs: List[Dict]):
        x = torch.stack([b["image"].flatten() for b in batched_inputs]).to(self.device)
        logits = self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))
        if self.training:
            y = torch.tensor([b["label"] for b in batched_inputs], device=self.device)
            return {"loss_cls": nn.functional.cross_entropy(logits, y)}
        return [{"logits": row} for row in logits]


def register_toy_meta_arch() -> None:
    """Register :class:`ToyClassifier` (idempotent)."""
    if "ToyClassifier" not in META_ARCH_REGISTRY:
        META_ARCH_REGISTRY.register(ToyClassifier)


class ToyStream:
    """Infinite, resumable stream of batches: batch ``k`` depends only on ``(seed, k, rank)``.

    Implements ``set_start_iter`` like the toolbox's training loaders, so a resumed run
    sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, batch_size: int = 8, seed: int = 0, rank: int = 0) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start_iter = 0

    def set_start_iter(self, start_iter: int) -> None:
        self.start_iter = start_iter

    def batch(self, k: int) -> List[Dict]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + k * 31 + self.rank)
        x = torch.randn(self.batch_size, 12, generator=g)
        w = torch.arange(12, dtype=torch.float32).reshape(3, 4).sum(1)
        y = (x[:, :3] * w).argmax(1)  # a learnable rule
        return [{"image": x[i].reshape(3, 2, 2), "label": int(y[i])} for i in range(len(x))]

    def __iter__(self) -> Iterator[List[Dict]]:
        k = self.start_iter
        while True:
            yield self.batch(k)
            k += 1


class ToyTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` whose training loader is this process' :class:`ToyStream`
    (8 images per batch, seeded by ``cfg.SEED``)."""

    @classmethod
    def build_train_loader(cls, cfg):
        return ToyStream(batch_size=8, seed=cfg.SEED, rank=comm.get_rank())


def toy_trainer_cfg(
    output_dir: str,
    *,
    seed: int,
    max_iter: int,
    checkpoint_period: int,
    steps: Sequence[int] = (),
    warmup_iters: int = 0,
    log_period: Optional[int] = None,
):
    """Config of a CPU :class:`ToyClassifier` run with SGD (lr 0.1) for :class:`ToyTrainer`
    (registers the toy meta-architecture); ``log_period=None`` keeps the default."""
    register_toy_meta_arch()
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "ToyClassifier"
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.SEED = seed
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = list(steps)
    cfg.SOLVER.WARMUP_ITERS = warmup_iters
    cfg.SOLVER.CHECKPOINT_PERIOD = checkpoint_period
    if log_period is not None:
        cfg.LOG_PERIOD = log_period
    return cfg


def toy_ddp_worker(output_dir: str, max_iter: int = 6) -> None:
    """Train :class:`ToyClassifier` with :class:`DefaultTrainer` in the current process group.

    Every rank writes ``rank<k>.pt`` with its final weights, its own last-batch loss, the
    ``all_gather`` of those losses and their ``reduce_dict`` mean (used by the DDP test).
    """
    rank = comm.get_rank()
    cfg = toy_trainer_cfg(output_dir, seed=1, max_iter=max_iter, checkpoint_period=1000)
    torch.manual_seed(0)  # identical initial weights on every rank
    trainer = ToyTrainer(cfg)
    trainer.train()
    model = trainer.model_without_ddp
    model.train()
    loss = model(ToyStream(batch_size=8, seed=99, rank=rank).batch(0))["loss_cls"].detach()
    gathered = comm.all_gather(float(loss))
    reduced = comm.reduce_dict({"loss": loss})["loss"]
    torch.save(
        {
            "state": model.state_dict(),
            "loss": float(loss),
            "gathered": gathered,
            "reduced": float(reduced),
            "world_size": comm.get_world_size(),
        },
        os.path.join(output_dir, f"rank{rank}.pt"),
    )


# ----------------------------------------------------------------------------- reliability tests
def write_tiny_image(path, seed: int = 0, size=(32, 16)) -> str:
    """Write a small random RGB image (format from the extension, e.g. .jpg / .png).

    Args:
        path: destination file.
        seed: pixels are drawn from ``numpy.random.default_rng(seed)``.
        size: ``(height, width)``.

    Returns:
        ``str(path)``.
    """
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(int(size[0]), int(size[1]), 3), dtype=np.uint8)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"write_tiny_image: OpenCV could not write '{path}'")
    return str(path)


class FixedFeatureModel(nn.Module):
    """Evaluation-only model returning a fixed feature per input.

    ``model(batch)`` returns ``[{"feature": features[x["feature_index"]]}, ...]`` and records
    the indices it saw in :attr:`seen` (so tests can check how data was sharded).

    Args:
        features: ``(N, D)`` float tensor, one row per ``feature_index``.
    """

    def __init__(self, *, features: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("features", torch.as_tensor(features, dtype=torch.float32))
        self.seen: List[int] = []

    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            raise RuntimeError("FixedFeatureModel is an evaluation-only model")
        out = []
        for x in batched_inputs:
            idx = int(x["feature_index"])
            self.seen.append(idx)
            out.append({"feature": self.features[idx].clone()})
        return out


def reid_eval_worker(work_dir: str) -> None:
    """Evaluate :class:`FixedFeatureModel` in the current process group (used by the DDP test).

    Reads ``<work_dir>/eval_input.pt`` = ``{"name", "records", "features", "metric",
    "batch_size"}`` (records carry a ``feature_index`` and point at real image files),
    registers the test set ``name`` if needed and runs the real path:
    ``build_reid_test_loader`` (contiguous shard per rank) -> ``inference_on_dataset`` ->
    :class:`~reid_plugins.evaluation.ReIDEvaluator` (``comm.gather`` to rank 0). The main
    process writes ``<work_dir>/eval_ws<world_size>.json`` with the metrics, the indices each
    rank evaluated, and the evaluator's per-query top-k dump under ``ws<world_size>/``.
    """
    import json

    from reid_plugins.data import DatasetCatalog, build_reid_test_loader
    from reid_plugins.evaluation import inference_on_dataset
    from reid_plugins.evaluation.reid_evaluation import ReIDEvaluator

    data = torch.load(os.path.join(work_dir, "eval_input.pt"), weights_only=False)
    name = data["name"]
    if name not in DatasetCatalog:
        records = data["records"]
        DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.SIZE_TEST = [32, 16]
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.IMS_PER_BATCH = int(data["batch_size"])
    cfg.TEST.METRIC = data["metric"]
    cfg.TEST.MAX_RANK = 10
    world = comm.get_world_size()
    loader, _ = build_reid_test_loader(cfg, name)
    model = FixedFeatureModel(features=data["features"])
    evaluator = ReIDEvaluator.from_config(
        cfg, name, output_dir=os.path.join(work_dir, f"ws{world}")
    )
    results = inference_on_dataset(model, loader, evaluator)
    shards = comm.all_gather(model.seen)
    if comm.is_main_process():
        with open(os.path.join(work_dir, f"eval_ws{world}.json"), "w") as f:
            json.dump({"results": results, "shards": shards, "world_size": world}, f)


__all__ += ["write_tiny_image", "FixedFeatureModel", "reid_eval_worker"]


#: The repository's ``tools/`` folder (scripts, not a package).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS_DIR = os.path.join(REPO, "tools")


def load_tool(name: str) -> ModuleType:
    """The module of the command ``tools/<name>.py``: ``reid_plugins.cli.<name>`` for the tools
    that live there (``tools/<name>.py`` is a wrapper), else a fresh module object of the
    script (executed, ``main`` not run)."""
    if os.path.isfile(os.path.join(REPO, "reid_plugins", "cli", f"{name}.py")):
        return importlib.import_module(f"reid_plugins.cli.{name}")
    path = os.path.join(TOOLS_DIR, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
