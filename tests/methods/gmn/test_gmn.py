"""GMN meta-architecture: losses, multi-source batches, DP warm-up hook (incl. resume),
config adder and a loss that falls on a tiny separable problem."""

import os

import pytest
import torch
import torch.nn.functional as F

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.engine import HookBase
from reid_plugins.methods.gmn import (
    GMN,
    DPWarmupHook,
    GMNTrainer,
    MetricNet,
    add_gmn_config,
    pair_features,
)
from reid_plugins.modeling import build_model


def tiny_cfg(**gmn):
    cfg = add_all_configs(get_cfg())
    cfg.MODEL.META_ARCHITECTURE = "GMN"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.BASE_WIDTH = 8
    cfg.MODEL.BACKBONE.FROM_SCRATCH = True  # tiny random network on purpose
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.MODEL.GMN.MNET.HIDDEN_DIMS = [16, 8]
    cfg.INPUT.SIZE_TRAIN = [32, 16]
    cfg.INPUT.SIZE_TEST = [32, 16]
    for k, v in gmn.items():
        cfg.merge_from_list([f"MODEL.GMN.{k}", v])
    return cfg


def make_batch(num_ids=4, k=4, seed=0, noise=20.0, domain=None):
    """P x K batch of 32x16 images: each identity a fixed random colour pattern + noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_ids, 3, 4, 2, generator=torch.Generator().manual_seed(123)) * 255
    batch = []
    for pid in range(num_ids):
        base = F.interpolate(protos[pid : pid + 1], size=(32, 16), mode="nearest")[0]
        for _ in range(k):
            img = (base + noise * torch.randn(3, 32, 16, generator=g)).clamp(0, 255)
            rec = {"image": img, "pid": pid, "camid": 0, "file_name": f"{pid}.jpg"}
            if domain is not None:
                rec["domain"] = domain
            batch.append(rec)
    return batch


def test_training_losses_and_inference():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    assert isinstance(model, GMN) and isinstance(model.metric_net, MetricNet)
    losses = model(make_batch())
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_gmn", "loss_pic"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.metric_net.classifier.weight.grad.abs().sum() > 0
    model.eval()
    out = model(make_batch())
    feats = torch.stack([o["feature"] for o in out])
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(16))


def test_pair_loss_gradient_flow_and_detach():
    torch.manual_seed(0)
    for detach in (False, True):
        model = build_model(tiny_cfg(**{"PAIRS.DETACH": detach}))
        feats = torch.randn(8, model.head.feat_dim, requires_grad=True)
        pids = torch.arange(4).repeat_interleave(2)
        model.pair_losses(feats, pids)["loss_gmn"].backward()
        assert (feats.grad is None) == detach


def test_pair_losses_use_normalised_pair_features():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(**{"PAIRS.NEGATIVES": "all", "LOSSES.PIC.ENABLED": False}))
    model.metric_net.eval()  # BN running stats: the loss is a sum of per-pair terms
    feats = torch.randn(4, model.head.feat_dim) * 5
    pids = torch.tensor([0, 0, 1, 1])
    f = F.normalize(feats, dim=1)
    ia, ib = torch.tensor([0, 2, 0, 0, 1, 1]), torch.tensor([1, 3, 2, 3, 2, 3])
    labels = torch.tensor([1.0, 1, 0, 0, 0, 0])
    logits = model.metric_net(pair_features(f[ia], f[ib]))
    expected = model.pair_loss(logits, labels)
    torch.testing.assert_close(model.pair_losses(feats, pids)["loss_gmn"], expected)


def test_multi_source_batches_average_domain_losses():
    torch.manual_seed(0)
    # Each domain batch is forwarded on its own (BN statistics never mix domains), so the
    # multi-source losses are exactly the means of the single-batch losses.
    model = build_model(tiny_cfg(**{"PAIRS.NEGATIVES": "all"}))
    b0, b1 = make_batch(seed=1, domain=0), make_batch(seed=2, domain=1)
    both = model([b0, b1])
    single = [model(b0), model(b1)]
    for k in both:
        torch.testing.assert_close(both[k], (single[0][k] + single[1][k]) / 2)


def test_losses_fall_on_a_tiny_separable_problem():
    torch.manual_seed(0)
    cfg = tiny_cfg(**{"DP.ENABLED": False})
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(12):
        losses = model(make_batch(seed=step))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first = {k: sum(h[k] for h in history[:3]) / 3 for k in history[0]}
    last = {k: sum(h[k] for h in history[-3:]) / 3 for k in history[0]}
    assert last["loss_cls"] < first["loss_cls"]
    assert last["loss_gmn"] < 0.8 * first["loss_gmn"]
    assert sum(last.values()) < 0.8 * sum(first.values())


def test_mnet_off_is_the_baseline_and_bad_configs():
    model = build_model(tiny_cfg(**{"MNET.ENABLED": False}))
    assert model.metric_net is None and not model.uses_metric_net_at_test
    assert set(model(make_batch())) == {"loss_cls", "loss_triplet"}
    cfg = get_cfg()  # no MODEL.GMN subtree
    cfg.MODEL.META_ARCHITECTURE = "GMN"
    with pytest.raises(KeyError, match="add_gmn_config"):
        GMN.from_config(cfg)
    cfg = tiny_cfg()
    cfg.MODEL.LOSSES.MEMORY.ENABLED = True
    with pytest.raises(ValueError, match="MEMORY"):
        GMN.from_config(cfg)
    with pytest.raises(ValueError, match="NEGATIVES"):
        build_model(tiny_cfg(**{"PAIRS.NEGATIVES": "semihard"}))
    with pytest.raises(ValueError, match="FUSION_WEIGHT"):
        build_model(tiny_cfg(**{"TEST.FUSION_WEIGHT": 1.5}))


def test_add_gmn_config_is_idempotent():
    cfg = get_cfg()
    add_gmn_config(cfg)
    cfg.MODEL.GMN.DP.RATE = 0.35
    add_gmn_config(cfg)
    add_all_configs(cfg)
    assert cfg.MODEL.GMN.DP.RATE == 0.35


# ----------------------------------------------------------------------------- #
# DP warm-up hook in a tiny trainer run
# ----------------------------------------------------------------------------- #
class _Stream:
    def __init__(self):
        self.start = 0

    def set_start_iter(self, k):
        self.start = k

    def __iter__(self):
        k = self.start
        while True:
            yield make_batch(seed=k)
            k += 1


class _Trainer(GMNTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return _Stream()

    def build_writers(self):
        return []  # no TensorBoard/JSON writers: keeps the test fast


class _Record(HookBase):
    def __init__(self, log):
        self.log = log

    def before_step(self):
        model = self.trainer.model_without_ddp
        self.log.append((self.trainer.iter, model.dp_active, model.metric_net.dp_enabled))


def _trainer_cfg(tmp_path, max_iter):
    cfg = tiny_cfg(**{"DP.WARMUP_ITERS": 3})
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TRAINER.NAME = "GMNTrainer"
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = []
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 4
    cfg.LOG_PERIOD = 100
    return cfg


def test_dp_hook_switches_on_after_warmup_and_survives_resume(tmp_path):
    torch.manual_seed(0)
    trainer = _Trainer(_trainer_cfg(tmp_path, 5))
    assert any(isinstance(h, DPWarmupHook) for h in trainer._hooks)
    log = []
    trainer.register_hooks([_Record(log)])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert [(it, on) for it, on, _ in log] == [
        (0, False),
        (1, False),
        (2, False),
        (3, True),
        (4, True),
    ]
    assert os.path.isfile(tmp_path / "model_0000003.pth")

    # Resume from the checkpoint after iteration 3: the flag is restored with the model
    # (a buffer) before any hook runs, and training continues with DP on.
    cfg = _trainer_cfg(tmp_path, 6)
    cfg.MODEL.WEIGHTS = ""
    resumed = _Trainer(cfg)
    assert resumed.model_without_ddp.dp_active is False
    with open(tmp_path / "last_checkpoint", "w") as f:
        f.write("model_0000003.pth")
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4 and resumed.model_without_ddp.dp_active is True
    log2 = []
    resumed.register_hooks([_Record(log2)])
    resumed.train()
    assert [(it, on) for it, on, _ in log2] == [(4, True), (5, True)]


def test_dp_hook_turns_flag_off_before_warmup_when_starting_from_weights():
    model = build_model(tiny_cfg())
    model.set_dp_active(True)  # e.g. loaded from a finished run's weights

    class _T:
        start_iter = 0
        iter = 0

    hook = DPWarmupHook(model, start_iter=2)
    hook.trainer = _T()
    hook.before_train()
    assert model.dp_active is False
    for it, expected in [(0, False), (1, False), (2, True), (3, True)]:
        hook.trainer.iter = it
        hook.before_step()
        assert model.dp_active is expected


def test_dp_really_perturbs_training_pairs_only_after_the_flag():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(**{"DP.RATE": 0.5}))
    model.train()
    feats, pids = torch.randn(16, model.head.feat_dim), torch.arange(4).repeat_interleave(4)
    a, b = model.pair_losses(feats, pids), model.pair_losses(feats, pids)
    torch.testing.assert_close(a["loss_gmn"], b["loss_gmn"])
    model.set_dp_active(True)
    c, d = model.pair_losses(feats, pids), model.pair_losses(feats, pids)
    assert not torch.allclose(c["loss_gmn"], d["loss_gmn"])
    model.eval()  # test-time scoring is never perturbed
    torch.testing.assert_close(
        model.pairwise_distance(feats, feats), model.pairwise_distance(feats, feats)
    )
