"""The default fast path: SOLVER.AMP / TEST.AMP "auto", MODEL.CHANNELS_LAST, fused optimizers,
SOLVER.COMPILE (tests/conftest.py pins float32 for the rest of the suite)."""

import pytest
import torch

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.engine import AMPTrainer, SimpleTrainer
from reid_plugins.engine.defaults import DefaultTrainer
from reid_plugins.evaluation import DatasetEvaluator, inference_on_dataset
from reid_plugins.methods.m3l.trainer import MetaTrainer
from reid_plugins.modeling import build_model
from reid_plugins.solver import build_optimizer, get_default_optimizer_params, precision
from reid_plugins.solver.precision import resolve_amp_dtype, resolve_channels_last, to_float32
from tests._testing import ToyClassifier, ToyStream, ToyTrainer, toy_trainer_cfg


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: value)

    return set_native


@pytest.mark.parametrize(
    "enabled, dtype, device, native, expected",
    [
        (False, "auto", "cuda", True, None),
        (None, "auto", "cuda", False, torch.float16),
        ("auto", "auto", "cuda", False, torch.float16),
        ("AUTO", "bfloat16", "cuda", False, torch.bfloat16),
        (None, "auto", "cpu", True, torch.bfloat16),
        (None, "auto", "cpu", False, None),  # emulated bf16 is slower than float32
        (None, "float16", "cpu", True, None),  # auto never picks emulated fp16 on CPU
        (True, "auto", "cpu", False, torch.bfloat16),  # explicit: as asked
        (True, "float16", "cpu", False, torch.float16),
        (None, "auto", "mps", True, None),
    ],
)
def test_amp_resolution(native_bf16, enabled, dtype, device, native, expected):
    native_bf16(native)
    assert resolve_amp_dtype(enabled, dtype, device) == expected
    assert resolve_amp_dtype(enabled, dtype, device, supported=False) is None


def test_amp_resolution_rejects_bad_values():
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE"):
        resolve_amp_dtype(True, "fp8", "cpu")
    with pytest.raises(ValueError, match="TEST.AMP.ENABLED must be True, False or 'auto'"):
        resolve_amp_dtype("yes", "auto", "cpu", key="TEST.AMP")
    with pytest.raises(ValueError, match="MODEL.CHANNELS_LAST"):
        resolve_channels_last("on", None)


def test_config_check_names_a_bad_fast_path_value_in_one_line():
    from reid_plugins.config import ConfigError
    from reid_plugins.engine.config_check import check_config

    for key, value in [("SOLVER.AMP.ENABLED", "yes"), ("SOLVER.AMP.DTYPE", "fp8"),
                       ("TEST.AMP.ENABLED", "fast"), ("MODEL.CHANNELS_LAST", "on")]:  # fmt: skip
        cfg = add_all_configs(get_cfg())
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value  # as merged from a YAML file onto the shipped None default
        with pytest.raises(ConfigError, match=key.rsplit(".", 1)[0].replace(".", r"\.")) as e:
            check_config(cfg, "x.yaml")
        assert "\n" not in str(e.value) and repr(value) in str(e.value) and "x.yaml" in str(e.value)
    check_config(add_all_configs(get_cfg()))  # the defaults pass


def test_channels_last_follows_mixed_precision_unless_set():
    assert resolve_channels_last(None, torch.bfloat16) and resolve_channels_last("auto", torch.half)
    assert not resolve_channels_last(None, None)
    assert resolve_channels_last(True, None) and not resolve_channels_last(False, torch.bfloat16)


def test_native_bf16_detection_reads_cpu_flags(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open
    for flags, expected in [("fpu avx512f avx512_bf16", True), ("fpu amx_bf16", True),
                            ("fpu avx2 avx512f avx512bw", False)]:  # fmt: skip
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(
            builtins, "open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p)
        )
        precision.cpu_has_native_bf16.cache_clear()
        assert precision.cpu_has_native_bf16() is expected
    precision.cpu_has_native_bf16.cache_clear()


def _tiny_reid_cfg():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.BASE_WIDTH = 4
    cfg.MODEL.BACKBONE.FROM_SCRATCH = True
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.STEPS = []
    return cfg


def _reid_batches(n=8, seed=0, repeat=True):
    """Batches of random 32x16 images (the same batch again with ``repeat``: learnable)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 16, generator=g) * 255
    while True:
        yield [{"image": images[i], "pid": i % 4, "camid": 0} for i in range(n)]
        if not repeat:
            images = torch.rand(n, 3, 32, 16, generator=g) * 255


class _ReIDTrainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return _reid_batches()


def test_auto_trains_a_reid_model_in_bf16_channels_last_with_a_fused_optimizer(
    tmp_path, native_bf16
):
    native_bf16(True)
    cfg = _tiny_reid_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.SOLVER.AMP.ENABLED = None
    cfg.MODEL.CHANNELS_LAST = None
    cfg.SOLVER.FUSED = True
    cfg.SOLVER.MAX_ITER = 20
    cfg.SOLVER.BASE_LR = 1e-2
    cfg.SOLVER.CHECKPOINT_PERIOD = 100
    trainer = _ReIDTrainer(cfg)
    assert isinstance(trainer._trainer, AMPTrainer) and trainer._trainer.dtype == torch.bfloat16
    conv = trainer.model_without_ddp.backbone.stem.conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # really re-laid out, not a 1x1 corner case
    assert all(g.get("fused") for g in trainer.optimizer.param_groups)
    # equal lr / weight decay share one group: weights+biases, and the norm layers' group
    assert len(trainer.optimizer.param_groups) <= 2
    seen = []
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.train()
    assert set(seen) == {torch.bfloat16}
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])  # the bf16 model learns
    # without native bf16, auto trains in float32 with contiguous weights
    native_bf16(False)
    plain = _ReIDTrainer(cfg)
    assert type(plain._trainer) is SimpleTrainer
    assert plain.model_without_ddp.backbone.stem.conv1.weight.is_contiguous()


def test_meta_trainer_resolves_auto_to_float32_but_refuses_explicit_amp(native_bf16):
    native_bf16(True)
    cfg = add_all_configs(get_cfg())
    cfg.SOLVER.AMP.ENABLED = "auto"
    assert MetaTrainer.amp_dtype(cfg, "cpu") is None
    assert DefaultTrainer.amp_dtype(cfg, "cpu") == torch.bfloat16
    cfg.MODEL.M3L.META_LEARNING = False
    step = MetaTrainer.build_step_trainer(
        None, cfg, ToyClassifier(), ToyStream(), torch.optim.SGD(ToyClassifier().parameters(), 1)
    )
    assert not isinstance(step, AMPTrainer)
    cfg.SOLVER.AMP.ENABLED = True
    with pytest.raises(ValueError, match="not supported by TRAINER.NAME MetaTrainer"):
        MetaTrainer.build_step_trainer(None, cfg, ToyClassifier(), ToyStream(), None)


def test_fused_optimizer_matches_the_plain_one_and_merges_groups():
    cfg = _tiny_reid_cfg()
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    results = {}
    for fused in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg)
        cfg.SOLVER.FUSED = fused
        opt = build_optimizer(cfg, model)
        n_params = sum(len(g["params"]) for g in opt.param_groups)
        assert n_params == len([p for p in model.parameters() if p.requires_grad])
        assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 5e-4}
        assert len(opt.param_groups) == 2
        assert bool(opt.param_groups[0].get("fused")) == fused
        batch = next(_reid_batches())
        for _ in range(3):
            opt.zero_grad()
            sum(model(batch).values()).backward()
            opt.step()
        results[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(results[True], results[False], rtol=1e-4, atol=1e-5)
    # merging the groups changes nothing in torch's default implementation (bit for bit)
    torch.manual_seed(0)
    model = build_model(cfg)
    groups = get_default_optimizer_params(
        model, base_lr=1e-3, weight_decay=5e-4, weight_decay_norm=0.0
    )
    assert len(groups) > 2
    opt = torch.optim.Adam(groups, lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        sum(model(batch).values()).backward()
        opt.step()
    assert torch.equal(
        torch.cat([p.detach().flatten() for p in model.parameters()]), results[False]
    )


def test_compile_wraps_the_training_model(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(model, **kwargs):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = toy_trainer_cfg(tmp_path, seed=0, max_iter=2, checkpoint_period=10)
    cfg.SOLVER.COMPILE = True
    trainer = ToyTrainer(cfg)
    assert compiled == [trainer.model_without_ddp]
    cfg.SOLVER.COMPILE = False
    ToyTrainer(cfg)
    assert len(compiled) == 1


class _Collect(DatasetEvaluator):
    def reset(self):
        self.features = []

    def process(self, inputs, outputs):
        self.features += [o["feature"] for o in outputs]

    def evaluate(self):
        return {}


def test_mixed_precision_inference_gives_float32_features_close_to_float32_ones():
    cfg = _tiny_reid_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    loader = [b for _, b in zip(range(2), _reid_batches(seed=1, repeat=False))]
    feats = {}
    for amp in (False, True):
        ev = _Collect()
        if amp:
            model.to(memory_format=torch.channels_last)
        inference_on_dataset(model, loader, ev, amp=amp)
        feats[amp] = torch.stack(ev.features)
    assert feats[True].dtype == torch.float32 and feats[True].shape == feats[False].shape
    assert not torch.equal(feats[True], feats[False])  # bf16 really ran
    cos = torch.nn.functional.cosine_similarity(feats[True], feats[False], dim=1)
    assert cos.min() > 0.99
    assert model.training  # mode restored


def test_to_float32_casts_nested_low_precision_tensors_only():
    out = to_float32(
        [{"a": torch.ones(2, dtype=torch.bfloat16), "b": (torch.ones(1, dtype=torch.half),)},
         {"i": torch.ones(2, dtype=torch.long), "s": "x"}]
    )  # fmt: skip
    assert out[0]["a"].dtype == torch.float32 and out[0]["b"][0].dtype == torch.float32
    assert out[1]["i"].dtype == torch.long and out[1]["s"] == "x"


@pytest.mark.parametrize("project", ["oim", "tdn"])
def test_person_search_models_train_under_the_fast_path(project, tmp_path, monkeypatch):
    """RoIAlign, NMS, OIM and TDN's heads run under bfloat16 autocast with channels-last
    weights and a fused optimizer (what SOLVER.AMP auto picks on CPUs with native bf16)."""
    import os

    from reid_plugins.data.synthetic_scenes import generate_synthetic_scenes
    from reid_plugins.engine import build_trainer

    torch.set_num_threads(1)
    root = tmp_path / "datasets"
    monkeypatch.setenv("REID_DATASETS", str(root))
    generate_synthetic_scenes(
        str(root), fmt="cuhk_sysu", num_train_images=6, num_test_images=11, num_train_ids=4,
        num_test_ids=3, num_cams=2, image_size=(64, 96), appearances=(2, 3),
        unlabeled_per_image=(0, 1), progress=False,
    )  # fmt: skip
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(os.path.join(repo, "projects", project, "synthetic.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.BASE_WIDTH", 8,
        "MODEL.PERSON_SEARCH.RPN.ANCHOR_SCALES", [2, 4, 8],
        "MODEL.PERSON_SEARCH.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 16,
        "INPUT.MIN_SIZE_TRAIN", 64, "INPUT.MAX_SIZE_TRAIN", 96,
        "DATASETS.TEST", [], "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", [1], "SOLVER.WARMUP_ITERS", 0,
        "SOLVER.CHECKPOINT_PERIOD", 100,
        "OUTPUT_DIR", str(tmp_path / "out"),
        "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.DTYPE", "bfloat16",
        "MODEL.CHANNELS_LAST", True, "SOLVER.FUSED", True,
    ])  # fmt: skip
    if project == "tdn":
        cfg.MODEL.TDN.TEACHER.ENABLED = False
    trainer = build_trainer(cfg)
    assert isinstance(trainer._trainer, AMPTrainer) and trainer._trainer.dtype == torch.bfloat16
    before = [p.detach().clone() for p in trainer.model_without_ddp.parameters()]
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = {k: v for k, (v, _) in trainer.storage.latest().items() if k.startswith("loss_")}
    assert len(losses) >= 4 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = list(trainer.model_without_ddp.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
