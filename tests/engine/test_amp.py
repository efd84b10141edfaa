"""AMPTrainer (SOLVER.AMP): autocast forward, scaled float16 losses, unscaled clipping, resume."""

import pytest
import torch

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.engine import AMPTrainer, SimpleTrainer
from reid_plugins.methods.m3l.trainer import MetaTrainer
from reid_plugins.utils.events import EventStorage
from tests._testing import ToyClassifier, ToyStream, ToyTrainer, toy_trainer_cfg


def _train(trainer, iters):
    with EventStorage(0) as storage:
        for it in range(iters):
            trainer.iter = it
            trainer.run_step()
    return storage


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_forward_runs_in_low_precision_and_the_loss_falls(dtype):
    torch.manual_seed(0)
    model = ToyClassifier(dropout=0.0)
    seen = []
    model.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    trainer = AMPTrainer(model, ToyStream(batch_size=32), opt, dtype=dtype)
    assert trainer.grad_scaler.is_enabled() == (dtype == "float16")  # bf16 needs no scaling
    storage = _train(trainer, 40)
    assert set(seen) == {getattr(torch, dtype)}
    losses = [v for v, _ in storage.history("loss_cls").values()]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_clipping_sees_unscaled_gradients():
    norms = {}

    def clipper(name):
        def clip(params):
            norms[name] = torch.norm(torch.stack([p.grad.norm() for p in params])).item()

        return clip

    for name, cls, kw in [("fp32", SimpleTrainer, {}), ("amp", AMPTrainer, {"dtype": "float16"})]:
        torch.manual_seed(0)
        model = ToyClassifier(dropout=0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        _train(cls(model, ToyStream(batch_size=16), opt, grad_clipper=clipper(name), **kw), 1)
    # the scaler multiplies the loss by 65536; clipping must see the true gradient
    assert norms["amp"] == pytest.approx(norms["fp32"], rel=2e-2)


def _toy_cfg(out_dir, amp=True):
    cfg = toy_trainer_cfg(out_dir, seed=3, max_iter=4, checkpoint_period=2, log_period=100)
    cfg.SOLVER.AMP.ENABLED = amp
    cfg.SOLVER.AMP.DTYPE = "float16"
    return cfg


def test_default_trainer_checkpoints_and_resumes_the_grad_scaler(tmp_path):
    cfg = _toy_cfg(tmp_path)
    trainer = ToyTrainer(cfg)
    assert isinstance(trainer._trainer, AMPTrainer)
    trainer.resume_or_load(resume=False)
    state = trainer._trainer.grad_scaler.state_dict()
    trainer._trainer.grad_scaler.load_state_dict({**state, "scale": 1234.0})  # not the default
    trainer.train()
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert saved["trainer"]["grad_scaler"]["scale"] == pytest.approx(1234.0)
    resumed = ToyTrainer(cfg)
    assert resumed._trainer.grad_scaler.get_scale() == 65536.0
    resumed.resume_or_load(resume=True)
    assert resumed._trainer.grad_scaler.get_scale() == pytest.approx(1234.0)
    assert isinstance(ToyTrainer(_toy_cfg(tmp_path / "fp32", amp=False))._trainer, SimpleTrainer)


def test_amp_dtype_is_validated_and_meta_trainer_refuses_amp():
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE"):
        AMPTrainer(
            ToyClassifier(), ToyStream(), torch.optim.SGD([torch.zeros(1)], lr=0.1), dtype="fp8"
        )
    cfg = add_all_configs(get_cfg())
    cfg.SOLVER.AMP.ENABLED = True
    with pytest.raises(ValueError, match="not supported by TRAINER.NAME MetaTrainer"):
        MetaTrainer.build_step_trainer(None, cfg, ToyClassifier(), ToyStream(), None)
