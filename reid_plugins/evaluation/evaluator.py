"""``DatasetEvaluator`` protocol and ``inference_on_dataset``."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional, Union

import torch
from torch import nn
from tqdm import tqdm

from ..solver.precision import autocast, model_device_type, resolve_amp_dtype, to_float32
from ..utils import comm

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "inference_context"]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Accumulates model outputs and computes metrics.

    ``reset()`` before a pass, ``process(inputs, outputs)`` per batch (``inputs`` is the list
    of dicts fed to the model, ``outputs`` its per-input results), ``evaluate()`` at the end.
    ``evaluate`` returns a nested dict such as ``{"reid": {"mAP": ..}}`` on the main process
    (and may return ``{}`` or ``None`` on others).
    """

    def reset(self) -> None:
        """Clear accumulated state."""

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Accumulate one batch."""

    def evaluate(self) -> Optional[Dict]:
        """Compute the metrics from everything processed since ``reset``."""
        return {}


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators on the same outputs and merges their result dicts."""

    def __init__(self, evaluators: Iterable[DatasetEvaluator]) -> None:
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for e in self._evaluators:
            e.reset()

    def process(self, inputs, outputs) -> None:
        for e in self._evaluators:
            e.process(inputs, outputs)

    def evaluate(self) -> Dict:
        results: Dict = OrderedDict()
        for e in self._evaluators:
            res = e.evaluate()
            if comm.is_main_process() and res:
                for k, v in res.items():
                    if k in results:
                        raise KeyError(f"Two evaluators produced the same result key '{k}'")
                    results[k] = v
        return results


@contextmanager
def inference_context(model: nn.Module):
    """Put ``model`` in eval mode for the block, then restore its previous mode."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable,
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
    *,
    desc: str = "inference",
    amp: Union[bool, str, None] = False,
) -> Dict:
    """Run ``model`` on every batch of ``data_loader`` (eval mode, no grad) and evaluate.

    Shows a tqdm progress bar on the main process and logs throughput.

    Args:
        amp: mixed-precision inference (``TEST.AMP.ENABLED``): False (float32), True, or
            ``"auto"`` / None (float16 on CUDA, bfloat16 on CPUs with native bfloat16). The
            model's outputs are cast back to float32 before ``evaluator.process``.

    ``torch.no_grad`` rather than ``inference_mode``: tensors a model caches during evaluation
    (e.g. anchors) may later take part in training, which inference tensors cannot.

    Returns:
        The evaluator's result dict (``{}`` when ``evaluator`` is None).
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, (list, tuple)):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    start = time.perf_counter()
    n_inputs = 0
    device_type = model_device_type(model)
    dtype = resolve_amp_dtype(amp, "auto", device_type, key="TEST.AMP")
    with inference_context(model), torch.no_grad(), autocast(device_type, dtype):
        bar = tqdm(
            data_loader,
            total=total,
            desc=desc,
            disable=not comm.is_main_process(),
            leave=False,
            dynamic_ncols=True,
        )
        for inputs in bar:
            outputs = model(inputs)
            if dtype is not None:
                outputs = to_float32(outputs)
            evaluator.process(inputs, outputs)
            n_inputs += len(inputs)
    elapsed = time.perf_counter() - start
    logger.info(
        "%s: %d inputs in %.1fs (%.1f inputs/s per process, %s)",
        desc,
        n_inputs,
        elapsed,
        n_inputs / max(elapsed, 1e-9),
        "float32" if dtype is None else f"{dtype} autocast",
    )
    results = evaluator.evaluate()
    return results if results is not None else {}
