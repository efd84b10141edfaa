"""``DefaultTrainer`` and the command-line helpers shared by the ``tools/`` scripts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import warnings
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch
from fvcore.common.registry import Registry
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import Checkpointer
from ..modeling import build_model
from ..modeling.backbone.build import check_pretrained_backbone
from ..solver import build_grad_clipper, build_lr_scheduler, build_optimizer
from ..solver.precision import model_device_type, resolve_amp_dtype, resolve_channels_last
from ..utils import comm
from ..utils.env import collect_env_info, local_process_count, seed_all_rng, set_deterministic
from ..utils.errors import OutputDirError, TrainingInterrupted
from ..utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from ..utils.logger import setup_logger
from . import hooks
from .config_setup import add_plugin_argument
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = [
    "TRAINER_REGISTRY",
    "DefaultTrainer",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "create_ddp_model",
    "build_trainer",
    "check_output_dir",
    "resume_command",
]

logger = logging.getLogger(__name__)

TRAINER_REGISTRY = Registry("TRAINER")
TRAINER_REGISTRY.__doc__ = """
Trainer classes selectable with ``TRAINER.NAME`` (``DefaultTrainer`` subclasses whose
``run_step`` implements a non-standard optimisation, e.g. M3L's meta-update).
"""


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """detectron2-compatible command line of ``tools/train_net.py``."""
    parser = argparse.ArgumentParser(
        epilog=epilog
        or (
            "Examples:\n  python tools/train_net.py --config-file cfg.yaml\n"
            "  python tools/train_net.py --config-file cfg.yaml --resume\n"
            "  python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS x.pth\n"
            "  python tools/train_net.py --config-file cfg.yaml --num-gpus 2 SOLVER.BASE_LR 0.01"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume", action="store_true", help="resume from OUTPUT_DIR/last_checkpoint if it exists"
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train from scratch even if OUTPUT_DIR holds a finished run (model_final.pth)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of errors caused by bad input (config, data, weights)",
    )
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes per machine (GPUs; CPU processes with gloo without CUDA)",
    )
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="initialization URL for pytorch distributed backend, tcp://IP:PORT",
    )
    add_plugin_argument(parser)
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="modify config options at the end: KEY VALUE pairs",
    )
    return parser


def check_output_dir(output_dir: str) -> None:
    """Create ``output_dir`` and check that files can be written in it.

    Raises:
        OutputDirError: naming the folder and the system's reason.
    """
    probe = os.path.join(output_dir, f".write_test.{os.getpid()}")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise OutputDirError(f"Cannot write to OUTPUT_DIR '{output_dir}': {e.strerror or e}") from e


def share_cpu_among_processes(cfg) -> None:
    """On CPU with several local training processes (``--num-gpus N`` without CUDA), divide
    ``DATALOADER.NUM_WORKERS`` (in ``cfg``) and torch's intra-op threads by their number, so
    that N processes use the cores (and spawn the workers) one process would."""
    n = local_process_count()
    device = str(cfg.MODEL.DEVICE)
    on_cpu = device.startswith("cpu") or (device == "auto" and not torch.cuda.is_available())
    if n <= 1 or not on_cpu:
        return
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = workers // n
    if frozen:
        cfg.freeze()
    threads = torch.get_num_threads()
    if threads > 1 and "REID_THREADS_SHARED" not in os.environ:
        os.environ["REID_THREADS_SHARED"] = "1"
        torch.set_num_threads(max(1, threads // n))
    logging.getLogger("reid_plugins").info(
        "%d CPU processes on this machine: DATALOADER.NUM_WORKERS %d -> %d and %d torch "
        "threads per process",
        n,
        workers,
        cfg.DATALOADER.NUM_WORKERS,
        torch.get_num_threads(),
    )


def default_setup(cfg, args) -> None:
    """Output dir, loggers, environment info, config dump (``config.yaml``) and seed.

    Also shares CPU threads and loader workers among local processes on CPU
    (:func:`share_cpu_among_processes`).

    Args:
        cfg: the final (frozen or not) config.
        args: the parsed command line (may be None).

    Raises:
        OutputDirError: ``OUTPUT_DIR`` cannot be written.
    """
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        check_output_dir(output_dir)
    comm.synchronize()
    setup_logger(output_dir, distributed_rank=rank, name="reid_plugins")
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    log = logging.getLogger("reid_plugins")
    log.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    log.info("Environment info:\n%s", collect_env_info())
    if args is not None:
        log.info("Command line arguments: %s", args)
        if getattr(args, "config_file", ""):
            with open(args.config_file) as f:
                log.info("Contents of args.config_file=%s:\n%s", args.config_file, f.read())
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        with open(path, "w") as f:
            f.write(cfg.dump())
        log.info("Full config saved to %s", path)
    share_cpu_among_processes(cfg)
    seed = cfg.SEED if cfg.SEED < 0 else cfg.SEED + rank
    seed_all_rng(seed)
    if cfg.DETERMINISTIC:
        set_deterministic(True)
    if not cfg.DETERMINISTIC:
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def default_writers(output_dir: str, max_iter: int) -> List:
    """Console printer, ``metrics.json`` and TensorBoard writers."""
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


def resume_command(argv: Optional[List[str]] = None) -> str:
    """The command line that resumes this run: ``sys.argv`` with ``--resume`` added right
    after the script (before the KEY VALUE overrides, which take the rest of the line) and
    ``--overwrite`` removed."""
    argv = list(sys.argv if argv is None else argv)
    rest = [a for a in argv[1:] if a not in ("--overwrite", "--resume")]
    return " ".join(shlex.quote(a) for a in ["python", argv[0] if argv else "", "--resume", *rest])


_SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


@contextmanager
def stop_on_signals(trainer: "DefaultTrainer") -> Iterator[None]:
    """Within the block, SIGINT / SIGTERM ask ``trainer`` to stop after its current iteration
    (``trainer._stop_signal``); a second signal, or one during the evaluation after the last
    iteration (``model_final.pth`` is saved by then), interrupts at once
    (``KeyboardInterrupt``). Only installed in the main thread; the previous handlers are
    restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer._stop_signal:
            raise KeyboardInterrupt(f"{_SIGNAL_NAMES.get(signum, signum)} received twice")
        if trainer.iter >= trainer.max_iter:  # final evaluation: model_final.pth is saved
            raise KeyboardInterrupt(f"{_SIGNAL_NAMES.get(signum, signum)} after training")
        trainer._stop_signal = signum
        logger.warning(
            "%s received: stopping after iteration %d and saving a checkpoint (send it again "
            "to stop at once without saving)",
            _SIGNAL_NAMES.get(signum, signum),
            trainer.iter,
        )

    old = {s: signal.signal(s, handler) for s in _SIGNAL_NAMES}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Wrap in DDP when running with more than one process."""
    if comm.get_world_size() == 1:
        return model
    if torch.cuda.is_available() and next(model.parameters()).is_cuda:
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    with warnings.catch_warnings():
        # torch >= 2.10 deprecates broadcast_buffers but says to keep broadcast_buffers=False
        # for rank-local buffers (memory banks) until its replacement exists.
        warnings.filterwarnings(
            "ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning
        )
        return DistributedDataParallel(model, **kwargs)


class DefaultTrainer(TrainerBase):
    """A trainer with the standard behaviour, driven by the config.

    Builds model, optimizer, LR scheduler, train loader and checkpointer from ``cfg``
    (each through an overridable classmethod) and registers the default hooks: iteration
    timer, LR scheduler, optional precise BN, periodic checkpointer, evaluation and writers.

    Subclasses override :meth:`run_step` (via ``self._trainer``) or the ``build_*``
    classmethods. The trainer's state (optimizer, scheduler, iteration and RNG states) is
    checkpointed as ``trainer`` next to ``model``.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        log = logging.getLogger("reid_plugins")
        if not log.isEnabledFor(logging.INFO):
            setup_logger()
        self.cfg = cfg
        # data first, then the model with what the data says (identities per training set)
        data_loader = self.build_train_loader(cfg)
        model = self.build_model(cfg, getattr(data_loader, "num_pids_per_domain", None))
        self.optimizer = optimizer = self.build_optimizer(cfg, model)
        check_pretrained_backbone(cfg, model)  # after the data: a missing dataset is named first
        self.model_without_ddp = model
        model = create_ddp_model(
            model, broadcast_buffers=False, find_unused_parameters=self.find_unused_parameters(cfg)
        )
        self._trainer = self.build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = Checkpointer(
            self.model_without_ddp, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self._stop_signal = 0  # set by SIGINT / SIGTERM during train()
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ building blocks
    #: Whether ``run_step`` supports mixed precision; ``SOLVER.AMP.ENABLED: auto`` resolves
    #: to float32 for trainers that set this to False.
    SUPPORTS_AMP = True

    @classmethod
    def amp_dtype(cls, cfg, device_type: str) -> Optional[torch.dtype]:
        """The training autocast dtype (None = float32) from ``SOLVER.AMP``."""
        a = cfg.SOLVER.AMP
        return resolve_amp_dtype(a.ENABLED, a.DTYPE, device_type, supported=cls.SUPPORTS_AMP)

    @classmethod
    def build_model(cls, cfg, num_pids_per_domain: Optional[List[int]] = None) -> torch.nn.Module:
        """``build_model(cfg, num_pids_per_domain)``, channels-last per ``MODEL.CHANNELS_LAST``;
        logs the model.

        In training ``num_pids_per_domain`` is the training loader's attribute of that name
        (identities of each ``DATASETS.TRAIN`` set); without it (``--eval-only``, a loader
        that does not say) the model is built for inference."""
        model = build_model(cfg, num_pids_per_domain)
        amp = cls.amp_dtype(cfg, model_device_type(model))
        if resolve_channels_last(cfg.MODEL.CHANNELS_LAST, amp):
            model = model.to(memory_format=torch.channels_last)
        logger.info("Model:\n%s", model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        """The ReID training loader (``build_reid_train_loader``)."""
        from ..data.build import build_reid_train_loader

        return build_reid_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        from ..data.build import build_reid_test_loader

        loader, _info = build_reid_test_loader(cfg, dataset_name)
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        from ..evaluation.reid_evaluation import ReIDEvaluator

        return ReIDEvaluator.from_config(cfg, dataset_name, output_dir=output_folder)

    @classmethod
    def find_unused_parameters(cls, cfg) -> bool:
        return False

    def build_step_trainer(self, cfg, model, data_loader, optimizer) -> SimpleTrainer:
        """The object whose ``run_step`` performs one iteration: :class:`SimpleTrainer`, or
        :class:`AMPTrainer` when ``SOLVER.AMP`` resolves to mixed precision; the model is
        wrapped in ``torch.compile`` with ``SOLVER.COMPILE``."""
        clipper = build_grad_clipper(cfg)
        amp = self.amp_dtype(cfg, model_device_type(model))
        if cfg.SOLVER.COMPILE:
            model = torch.compile(model)
        logger.info("Training precision: %s", "float32" if amp is None else f"{amp} autocast")
        if amp is not None:
            return AMPTrainer(model, data_loader, optimizer, grad_clipper=clipper, dtype=amp)
        return SimpleTrainer(model, data_loader, optimizer, grad_clipper=clipper)

    def build_hooks(self) -> List[hooks.HookBase]:
        cfg = self.cfg
        ret: List[Optional[hooks.HookBase]] = [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            (
                hooks.PreciseBN(
                    cfg.TEST.EVAL_PERIOD,
                    self.model_without_ddp,
                    self.build_train_loader(cfg),
                    cfg.TEST.PRECISE_BN.NUM_ITER,
                )
                if cfg.TEST.PRECISE_BN.ENABLED
                else None
            ),
        ]
        data_init_hook = self.build_data_init_hook()
        if data_init_hook is not None:
            ret.insert(1, data_init_hook)
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model_without_ddp)
            return self._last_eval_results

        if cfg.DATASETS.TEST:
            ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.LOG_PERIOD))
        return [h for h in ret if h is not None]

    def build_data_init_hook(self) -> Optional[hooks.HookBase]:
        """A :class:`~hooks.DataInitHook` when the model initialises state from its training
        data (``initialize_from_data``), else None. The trainer supplies one evaluation-
        transform loader per training domain."""
        model = self.model_without_ddp
        if not callable(getattr(model, "initialize_from_data", None)):
            return None
        cfg = self.cfg

        def loaders():
            from ..data.build import build_feature_extraction_loader, get_reid_train_records

            records = get_reid_train_records(cfg)
            per_domain = [
                [r for r in records if int(r["domain"]) == d]
                for d in range(len(cfg.DATASETS.TRAIN))
            ]
            return [build_feature_extraction_loader(recs, cfg) for recs in per_domain]

        return hooks.DataInitHook(model, loaders)

    def build_writers(self) -> List:
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    # ------------------------------------------------------------------ running
    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from ``OUTPUT_DIR/last_checkpoint`` (model + trainer state) when ``resume``
        and a checkpoint exists; otherwise load ``MODEL.WEIGHTS`` (model only) if set.

        After a resume the next iteration is the one after the checkpoint's.
        """
        if resume and self.checkpointer.has_checkpoint():
            self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=True)
            self.start_iter = self.iter + 1
            logger.info("Resumed; training continues at iteration %d", self.start_iter)
        elif self.cfg.MODEL.WEIGHTS:
            self.checkpointer.load(self.cfg.MODEL.WEIGHTS, checkpointables=[])
            self.start_iter = 0
        else:
            self.start_iter = 0
        loader = self._trainer.data_loader
        if hasattr(loader, "set_start_iter"):
            # Training loaders are resumable: batch k depends only on (seed, k).
            loader.set_start_iter(self.start_iter)

    def train(self) -> Optional[Dict]:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``; return the last eval results.

        SIGINT (Ctrl-C) or SIGTERM stops training at the end of the current iteration, after
        all its hooks ran: a checkpoint ``model_<iter>.pth`` is saved (and tagged as the last
        one) and :class:`~reid_plugins.utils.errors.TrainingInterrupted` is raised, whose
        message says how to resume; the tools exit with 130 (SIGINT) or 143 (SIGTERM).

        Raises:
            TrainingInterrupted: on SIGINT / SIGTERM.
        """
        self._stop_signal = 0
        with stop_on_signals(self):
            super().train(self.start_iter, self.max_iter)
        return getattr(self, "_last_eval_results", None)

    def after_step(self) -> None:
        super().after_step()
        if self._stop_requested():
            self._save_and_stop()

    def _stop_requested(self) -> bool:
        """A signal was received here, or (DDP) in any process: all stop at the same
        iteration."""
        if comm.get_world_size() == 1:
            return bool(self._stop_signal)
        flag = torch.tensor([float(self._stop_signal)])
        torch.distributed.all_reduce(
            flag, op=torch.distributed.ReduceOp.MAX, group=comm._cpu_group()
        )
        self._stop_signal = int(flag.item())
        return bool(self._stop_signal)

    def _save_and_stop(self) -> None:
        name = f"model_{self.iter:07d}"
        self.checkpointer.save(name, iteration=self.iter)
        comm.synchronize()
        path = os.path.join(self.cfg.OUTPUT_DIR, name + ".pth")
        signame = _SIGNAL_NAMES.get(self._stop_signal, str(self._stop_signal))
        raise TrainingInterrupted(
            f"Training stopped by {signame} after iteration {self.iter}; checkpoint saved to "
            f"{path}. Resume with: {resume_command()}",
            self._stop_signal,
        )

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd.update(self._trainer.step_state_dict())  # optimizer (+ AMP grad scaler)
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._trainer.load_step_state_dict(state_dict)

    @classmethod
    def test(cls, cfg, model, evaluators=None) -> Dict:
        """Evaluate ``model`` on every ``DATASETS.TEST`` set.

        Returns:
            ``{dataset_name: results}``, or the results of the single dataset directly.
        """
        from ..evaluation import inference_on_dataset

        def evaluate(name: str, evaluator) -> Dict:
            loader = cls.build_test_loader(cfg, name)
            if evaluator is None:
                evaluator = cls.build_evaluator(
                    cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference", name)
                )
            return inference_on_dataset(
                model, loader, evaluator, desc=f"eval {name}", amp=cfg.TEST.AMP.ENABLED
            )

        return cls.evaluate_test_sets(cfg, evaluators, evaluate)

    @staticmethod
    def evaluate_test_sets(
        cfg,
        evaluators,
        evaluate,
        title: str = "Evaluation",
        log: logging.Logger = logger,
    ) -> Dict:
        """The loop shared by the trainers' ``test``: the results of every ``DATASETS.TEST``
        set, logged (main process) and written to ``OUTPUT_DIR/eval_results.json``.

        Args:
            cfg: the config (``DATASETS.TEST``, ``OUTPUT_DIR``).
            evaluators: one evaluator per test set, or None.
            evaluate: ``evaluate(name, evaluator) -> results`` of one set; ``evaluator`` is
                ``evaluators[i]``, or None when ``evaluators`` is None (``evaluate`` builds it).
            title, log: each set's results are logged as ``"<title> results for <name>"``
                on ``log``.

        Returns:
            ``{dataset_name: results}``, or the results of the single dataset directly.
        """
        results: Dict = OrderedDict()
        for idx, name in enumerate(cfg.DATASETS.TEST):
            res = evaluate(name, evaluators[idx] if evaluators is not None else None)
            results[name] = res
            if comm.is_main_process():
                log.info("%s results for %s:\n%s", title, name, format_results(res))
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=2, default=float)
        if len(results) == 1:
            return list(results.values())[0]
        return results


def format_results(results: Dict) -> str:
    """Render ``{"task": {"metric": value}}`` as a small table."""
    lines = []
    for task, metrics in results.items():
        if isinstance(metrics, dict):
            names = [k for k, v in metrics.items() if not isinstance(v, dict)]
            lines.append(f"{task}: " + "  ".join(f"{k}: {float(metrics[k]):.2f}" for k in names))
        else:
            lines.append(f"{task}: {metrics}")
    return "\n".join(lines)


TRAINER_REGISTRY.register(DefaultTrainer)


def build_trainer(cfg) -> DefaultTrainer:
    """Instantiate ``TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)``."""
    name = cfg.TRAINER.NAME
    if name not in TRAINER_REGISTRY:
        raise KeyError(
            f"TRAINER.NAME='{name}' is not registered; registered: "
            f"{sorted(k for k, _ in TRAINER_REGISTRY)}"
        )
    return TRAINER_REGISTRY.get(name)(cfg)
