"""M3L defaults = the authors' released code; each paper-form switch changes what it names.

Switches (``projects/m3l/README.md``, table "paper / authors' code / ours / switch"):
``MODEL.M3L.OUTER_GRADIENT`` (tests in ``test_meta_trainer.py``), ``MEMORY_UPDATE_RULE``,
``METABN_SAMPLE_SCALE`` / ``METABN_LAMBDA`` (``test_metabn.py``), ``NECK_BIAS_TRAINABLE`` and
``MODEL.BACKBONE.STEM_RELU``.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.methods.m3l import M3LMemoryLoss, MetaBNHead, MetaStepTrainer
from reid_plugins.methods.m3l.memory import occurrence_rank
from reid_plugins.modeling.backbone import build_backbone
from reid_plugins.solver import build_optimizer
from reid_plugins.utils.events import EventStorage
from tests.methods.m3l._helpers import DOMAINS, FEAT_DIM, batch, tiny_cfg, tiny_m3l

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


# ----------------------------------------------------------------------------- memory rule
def _memories(rule, momentum=0.2):
    mem = M3LMemoryLoss(num_pids_per_domain=[4], feat_dim=3, momentum=momentum, update_rule=rule)
    mem.initialize(0, torch.eye(4, 3) + 0.1, torch.arange(4))
    return mem


def test_occurrence_rank_counts_earlier_equal_ids():
    ids = torch.tensor([2, 0, 2, 1, 0, 2, 3])
    assert occurrence_rank(ids).tolist() == [0, 0, 1, 0, 1, 2, 0]
    assert occurrence_rank(torch.zeros(0, dtype=torch.long)).tolist() == []


def test_sequential_memory_update_matches_a_sample_by_sample_loop():
    """Authors' rule: for each (f, y) in batch order, M[y] <- normalize(m M[y] + (1-m) f)."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(7, 3, generator=g)
    pids = torch.tensor([2, 0, 2, 1, 0, 2, 0])
    mem = _memories("sequential")
    expected = mem.get_memory(0).clone()
    for f, y in zip(F.normalize(feats, dim=1), pids):  # the restatement: a plain loop
        row = 0.2 * expected[y] + 0.8 * f
        expected[y] = row / row.norm()
    mem.update(feats, pids, 0)
    torch.testing.assert_close(mem.get_memory(0), expected)
    # hand-computed single step: M = (1, 0, 0) -> 0.2 (1, 0, 0) + 0.8 (0, 1, 0), normalised
    one = _memories("sequential")
    one.get_memory(0)[0] = torch.tensor([1.0, 0.0, 0.0])
    one.update(torch.tensor([[0.0, 5.0, 0.0]]), torch.tensor([0]), 0)
    torch.testing.assert_close(one.get_memory(0)[0], torch.tensor([0.2, 0.8, 0.0]) / 0.8246211)


def test_mean_memory_update_is_eq2_and_differs_from_sequential():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(6, 3, generator=g)
    pids = torch.tensor([1, 3, 1, 1, 3, 0])
    mean, seq = _memories("mean"), _memories("sequential")
    expected = mean.get_memory(0).clone()
    unit = F.normalize(feats, dim=1)
    for k in (0, 1, 3):  # Eq. 2: one update per identity with the mean of its features
        row = 0.2 * expected[k] + 0.8 * unit[pids == k].mean(0)
        expected[k] = row / row.norm()
    mean.update(feats, pids, 0)
    seq.update(feats, pids, 0)
    torch.testing.assert_close(mean.get_memory(0), expected)
    # identity 0 has one image: both rules agree; identities 1 and 3 have several: they differ
    torch.testing.assert_close(seq.get_memory(0)[0], mean.get_memory(0)[0])
    torch.testing.assert_close(seq.get_memory(0)[2], mean.get_memory(0)[2])  # untouched
    assert (seq.get_memory(0)[[1, 3]] - mean.get_memory(0)[[1, 3]]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="MEMORY_UPDATE_RULE"):
        M3LMemoryLoss(num_pids_per_domain=[2], feat_dim=3, update_rule="bad")


# ----------------------------------------------------------------------------- stem
def test_stem_relu_switch():
    """STEM_RELU False (authors' ResNet): stem = max-pool(bn(conv(x))), negatives survive."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    with_relu = build_backbone(cfg)
    cfg.MODEL.BACKBONE.STEM_RELU = False
    torch.manual_seed(0)
    without = build_backbone(cfg)
    stem = without.stem
    x = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        expected = F.max_pool2d(stem.bn1(stem.conv1(x)), 3, 2, 1)  # restatement
        out = stem(x)
        torch.testing.assert_close(out, expected)
        assert out.min() < 0 and with_relu.stem(x).min() >= 0
        torch.testing.assert_close(with_relu.stem(x), expected.clamp(min=0))
    # same parameters either way (ImageNet weights load the same)
    assert with_relu.state_dict().keys() == without.state_dict().keys()


# ----------------------------------------------------------------------------- neck bias
def _stream():
    while True:
        yield [batch(d) for d in range(DOMAINS)]


@pytest.mark.parametrize("trainable", [True, False])
def test_neck_bias_trained_only_when_trainable(trainable):
    model = tiny_m3l()
    model.head.bottleneck.bias.requires_grad_(trainable)
    model.train()
    opt = build_optimizer(tiny_cfg(), model)
    tr = MetaStepTrainer(model, _stream(), opt, memory_update="batch", seed=0)
    with EventStorage(0):
        tr.run_step()
    bias = model.head.bottleneck.bias.detach()
    assert (bias.abs().max() > 0) == trainable  # starts at 0


# ----------------------------------------------------------------------------- config
def test_m3l_configs_default_to_the_authors_code():
    cfg = add_all_configs(get_cfg())
    m = cfg.MODEL.M3L
    assert (m.OUTER_GRADIENT, m.MEMORY_UPDATE_RULE, m.METABN_SAMPLE_SCALE) == (
        "authors",
        "sequential",
        "var",
    )
    assert m.METABN_LAMBDA == "shared" and m.NECK_BIAS_TRAINABLE and m.MEMORY_UPDATE == "forward"
    assert cfg.MODEL.BACKBONE.STEM_RELU  # core default: torchvision's stem
    for name in ("Base-M3L.yaml", "r50_to_market1501.yaml", "ibn_to_cuhk03.yaml"):
        c = add_all_configs(get_cfg())
        c.merge_from_file(os.path.join(ROOT, "projects", "m3l", name))
        assert not c.MODEL.BACKBONE.STEM_RELU, name
        assert c.MODEL.M3L.OUTER_GRADIENT == "authors", name
    head = MetaBNHead(feat_dim=FEAT_DIM)
    assert head.bottleneck.bias.requires_grad
