"""Engine: hook order, LR schedule, non-finite losses, exact resume, atomic checkpoints."""

import os

import pytest
import torch

from reid_plugins.checkpoint import Checkpointer
from reid_plugins.config import get_cfg
from reid_plugins.engine import HookBase, NonFiniteLossError, SimpleTrainer
from reid_plugins.solver import build_lr_scheduler
from tests._testing import ToyClassifier, ToyStream, ToyTrainer, toy_trainer_cfg


class RecordingHook(HookBase):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def before_train(self):
        self.log.append((self.name, "before_train"))

    def before_step(self):
        self.log.append((self.name, "before_step", self.trainer.iter))

    def after_backward(self):
        self.log.append((self.name, "after_backward", self.trainer.iter))

    def after_step(self):
        self.log.append((self.name, "after_step", self.trainer.iter))

    def after_train(self):
        self.log.append((self.name, "after_train"))


def test_hooks_called_in_order():
    torch.manual_seed(0)
    model = ToyClassifier()
    trainer = SimpleTrainer(model, ToyStream(), torch.optim.SGD(model.parameters(), lr=0.1))
    log = []
    trainer.register_hooks([RecordingHook("a", log), None, RecordingHook("b", log)])
    trainer.train(0, 2)
    expected = [("a", "before_train"), ("b", "before_train")]
    for it in range(2):
        expected += [
            ("a", "before_step", it),
            ("b", "before_step", it),
            ("a", "after_backward", it),
            ("b", "after_backward", it),
            ("a", "after_step", it),
            ("b", "after_step", it),
        ]
    expected += [("a", "after_train"), ("b", "after_train")]
    assert log == expected


def test_after_train_runs_on_exception():
    model = ToyClassifier()
    trainer = SimpleTrainer(model, ToyStream(), torch.optim.SGD(model.parameters(), lr=0.1))
    log = []

    class Boom(HookBase):
        def after_step(self):
            if self.trainer.iter == 1:
                raise RuntimeError("boom")

    trainer.register_hooks([Boom(), RecordingHook("r", log)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(0, 5)
    assert log[-1] == ("r", "after_train")


def test_lr_schedule_warmup_and_steps():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.MAX_ITER = 40
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.WARMUP_FACTOR = 0.1
    cfg.SOLVER.STEPS = [20, 30]
    cfg.SOLVER.GAMMA = 0.1
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # linear warm-up from 0.1 to 1.0 over 10 iterations: lr(i) = 0.1 + 0.9 * i / 10
    for i in range(10):
        assert lrs[i] == pytest.approx(0.1 + 0.9 * i / 10)
    assert lrs[10] == pytest.approx(1.0) and lrs[19] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(0.1) and lrs[29] == pytest.approx(0.1)
    assert lrs[30] == pytest.approx(0.01) and lrs[39] == pytest.approx(0.01)


def test_bad_schedule_config():
    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.STEPS = [5, 20]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="MAX_ITER"):
        build_lr_scheduler(cfg, opt)


def test_non_finite_loss_names_term_and_iteration():
    class NanModel(ToyClassifier):
        def forward(self, batch):
            out = super().forward(batch)
            if self.training:
                out["loss_bad"] = out["loss_cls"] * float("nan")
            return out

    model = NanModel()
    trainer = SimpleTrainer(model, ToyStream(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train(0, 3)
    assert "loss_bad" in str(e.value) and "iteration 0" in str(e.value)
    assert "loss_cls" not in str(e.value)


class StopAt(HookBase):
    """Simulates a crash after iteration ``k``."""

    def __init__(self, k):
        self.k = k

    def after_step(self):
        if self.trainer.iter == self.k:
            raise KeyboardInterrupt("simulated crash")


def _toy_cfg(out_dir, max_iter=20):
    return toy_trainer_cfg(
        out_dir,
        seed=5,
        max_iter=max_iter,
        checkpoint_period=5,
        steps=[8, 15],
        warmup_iters=4,
        log_period=3,
    )


def _run(cfg, resume=False, crash_at=None):
    torch.manual_seed(cfg.SEED)
    trainer = ToyTrainer(cfg)
    if crash_at is not None:
        trainer.register_hooks([StopAt(crash_at)])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full = _run(_toy_cfg(tmp_path / "full"))
    ref = {k: v.clone() for k, v in full.model_without_ddp.state_dict().items()}
    ref_lr = full.optimizer.param_groups[0]["lr"]

    cfg = _toy_cfg(tmp_path / "crash")
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, crash_at=12)  # last checkpoint: iteration 9 (model_0000009.pth)
    with open(tmp_path / "crash" / "last_checkpoint") as f:
        assert f.read() == "model_0000009.pth"
    resumed = ToyTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 10
    # Same LR as the uninterrupted run at iteration 10 (after the step at 8: x0.1).
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    resumed.train()
    for k, v in resumed.model_without_ddp.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(ref_lr)
    assert os.path.isfile(tmp_path / "crash" / "model_final.pth")
    # metrics.json continues after the resume (written by both runs)
    with open(tmp_path / "crash" / "metrics.json") as f:
        assert len(f.readlines()) >= 5


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    model = ToyClassifier()
    ckpt = Checkpointer(model, str(tmp_path))
    ckpt.save("model_0000001")
    good = torch.load(tmp_path / "model_0000001.pth", weights_only=False)["model"]

    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError("disk full (simulated)")

    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        ckpt.save("model_0000001")  # overwrite attempt of the same name
    with pytest.raises(OSError):
        ckpt.save("model_0000002")
    monkeypatch.setattr(torch, "save", real_save)
    # the previous file is intact, no partial file, and last_checkpoint still points to it
    loaded = torch.load(tmp_path / "model_0000001.pth", weights_only=False)["model"]
    for k in good:
        assert torch.equal(good[k], loaded[k])
    assert not os.path.exists(tmp_path / "model_0000002.pth")
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []
    assert ckpt.get_checkpoint_file().endswith("model_0000001.pth")


def test_corrupt_checkpoint_error_names_file(tmp_path):
    path = tmp_path / "model_bad.pth"
    path.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(RuntimeError, match="model_bad.pth"):
        Checkpointer(ToyClassifier(), str(tmp_path)).load(str(path))


def test_precise_bn_recomputes_running_statistics():
    from reid_plugins.engine import hooks

    torch.manual_seed(0)
    model = ToyClassifier()
    stream = ToyStream(batch_size=16, seed=3)
    batches = [stream.batch(k) for k in range(4)]
    # true mean of the BN input over the data the hook will see
    with torch.no_grad():
        feats = torch.cat(
            [model.fc1(torch.stack([b["image"].flatten() for b in batch])) for batch in batches]
        )
    hook = hooks.PreciseBN(0, model, iter(batches), num_iter=4)
    assert not torch.allclose(model.bn.running_mean, feats.mean(0), atol=1e-3)
    hook.update_stats()
    assert torch.allclose(model.bn.running_mean, feats.mean(0), atol=1e-5)
    assert torch.allclose(model.bn.running_var, feats.var(0, unbiased=True), rtol=0.05)
