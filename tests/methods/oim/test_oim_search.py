"""OIMSearch (TDN's OIM* baseline) and the shared Faster R-CNN pieces, on tiny images."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import roi_align

from reid_plugins.methods.oim.model import OIMSearch
from reid_plugins.modeling import build_model
from reid_plugins.modeling.person_search import (
    BACKGROUND_PID,
    ProposalSampler,
    fast_rcnn_losses,
    postprocess_detections,
)
from tests._person_search_helpers import (
    InputShapes,
    merge_overrides,
    scene_inputs,
    tiny_search_cfg,
)

pytestmark = pytest.mark.usefixtures("single_thread")

NUM_PIDS = 6


def _cfg(**kw):
    cfg = tiny_search_cfg("OIMSearch")
    cfg.MODEL.LOSSES.OIM.ENABLED = True
    cfg.MODEL.LOSSES.OIM.NUM_PIDS = NUM_PIDS
    cfg.MODEL.LOSSES.OIM.QUEUE_SIZE = 20
    ps = cfg.MODEL.PERSON_SEARCH
    ps.EMBEDDING_DIM = 16
    ps.ROI_HEADS.POOLER_RESOLUTION = [8, 4]
    ps.ROI_HEADS.DETECTIONS_PER_IMAGE = 20
    return merge_overrides(cfg, kw)


def _model(**kw):
    torch.manual_seed(0)
    return build_model(_cfg(**kw))


# --------------------------------------------------------------------------- building blocks
def test_proposal_sampler_labels_pids_and_targets():
    sampler = ProposalSampler(
        batch_size_per_image=16, positive_fraction=0.5, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
    )  # fmt: skip
    gt = torch.tensor([[0.0, 0.0, 10.0, 20.0], [30.0, 0.0, 40.0, 20.0]])
    props = torch.tensor(
        [[0.0, 0.0, 10.0, 18.0], [30.0, 0.0, 40.0, 19.0], [50.0, 50.0, 60.0, 60.0]]
    )
    (s,) = sampler([props], [gt], [torch.tensor([3, -1])])
    # 3 proposals + 2 appended gt boxes, all kept (budget 16)
    rows = {tuple(b.tolist()): (int(l), int(p)) for b, l, p in zip(s.boxes, s.labels, s.pids)}
    assert rows[(0.0, 0.0, 10.0, 18.0)] == (1, 3)
    assert rows[(30.0, 0.0, 40.0, 19.0)] == (1, -1)  # unlabelled person, not background
    assert rows[(50.0, 50.0, 60.0, 60.0)] == (0, BACKGROUND_PID)
    assert rows[(0.0, 0.0, 10.0, 20.0)] == (1, 3) and len(rows) == 5
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    fg = s.labels == 1
    decoded = coder.decode_single(s.regression_targets[fg], s.boxes[fg])
    expected = gt[[0 if p == 3 else 1 for p in s.pids[fg].tolist()]]
    torch.testing.assert_close(decoded, expected, atol=1e-4, rtol=0)
    assert s.regression_targets[~fg].abs().sum() == 0
    # image without any box: everything is background
    (e,) = sampler([props], [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    assert e.labels.sum() == 0 and (e.pids == BACKGROUND_PID).all()


def test_fast_rcnn_losses_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    deltas = torch.tensor([[9.0, 9, 9, 9], [0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.05]])
    targets = torch.zeros(3, 4)
    out = fast_rcnn_losses(logits, deltas, labels, targets, smooth_l1_beta=0.1)
    ce = -(torch.log_softmax(logits, 1)[[0, 1, 2], labels]).mean()
    # smooth L1 (beta 0.1): |0.5| -> 0.5 - 0.05 = 0.45; |0.05| -> 0.5 * 0.05**2 / 0.1 = 0.0125
    torch.testing.assert_close(out["loss_box_cls"], ce)
    torch.testing.assert_close(out["loss_box_reg"], torch.tensor((0.45 + 0.0125) / 3))


def test_postprocess_thresholds_nms_and_limit():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    props = torch.tensor([[0.0, 0, 10, 20], [1.0, 0, 11, 20], [40.0, 0, 50, 20], [0, 0, 5, 5]])
    logits = torch.tensor([[0.0, 3.0], [0.0, 2.0], [0.0, 1.0], [3.0, 0.0]])
    boxes, scores, keep = postprocess_detections(
        props, logits, torch.zeros(4, 4), (30, 45), coder,
        score_thresh=0.3, nms_thresh=0.5, detections_per_image=5,
    )  # fmt: skip
    # proposal 1 is suppressed by 0 (IoU 0.82), proposal 3 scores 0.047 < 0.3, 2 is clipped
    assert keep.tolist() == [0, 2]
    torch.testing.assert_close(boxes[1], torch.tensor([40.0, 0, 45, 20]))
    assert scores[0] > scores[1]


# --------------------------------------------------------------------------- model
def test_training_losses_finite():
    model = _model()
    model.train()
    losses = model(scene_inputs())
    assert set(losses) == {
        "loss_rpn_cls",
        "loss_rpn_reg",
        "loss_box_cls",
        "loss_box_reg",
        "loss_oim",
    }
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    assert losses["loss_oim"] > 0
    # the OIM loss is the cross-entropy of the labelled RoIs over [LUT; queue] (zero tables
    # at the start -> all logits 0 -> log(NUM_PIDS))
    torch.testing.assert_close(losses["loss_oim"], torch.tensor(NUM_PIDS).log())


def test_one_step_updates_weights_and_oim_tables():
    model = _model()
    model.train()
    oim = model.oim_loss
    assert not any(b is p for b in oim.buffers() for p in model.parameters())
    watched = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if n in ("backbone.stem.conv1.weight", "backbone.res5.0.conv1.weight",
                 "rpn.head.cls_logits.weight", "cls_score.weight", "bbox_pred.weight",
                 "embedding.0.weight")
    }  # fmt: skip
    assert len(watched) == 6
    captured = {}
    original = oim.forward

    def spy(features, pids):
        captured["pids"] = pids.clone()
        return original(features, pids)

    oim.forward = spy
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = model(scene_inputs())
    sum(losses.values()).backward()
    for t in (oim.lut, oim.queue):
        assert not t.requires_grad and t.grad is None  # no gradient into the OIM tables
    # the tables start at zero: all OIM logits are 0 and the first step has no OIM gradient
    assert model.embedding[0].weight.grad.abs().sum() == 0
    opt.step()
    # background RoIs never reach the OIM loss; labelled pids 0 and 3 update their LUT rows,
    # unlabelled person RoIs (-1) fill the queue
    pids = captured["pids"]
    assert (pids >= -1).all() and {0, 3} <= set(pids.tolist()) and (pids == -1).any()
    norms = oim.lut.norm(dim=1)
    torch.testing.assert_close(norms[[0, 3]], torch.ones(2))
    assert norms[[1, 2, 4, 5]].sum() == 0
    assert int(oim.queue_count) == min(int((pids == -1).sum()), oim.queue_size)
    # second step: the filled tables make the OIM loss train the embedding head
    opt.zero_grad()
    losses = model(scene_inputs())
    sum(losses.values()).backward()
    assert model.embedding[0].weight.grad.abs().sum() > 0
    assert oim.lut.grad is None and oim.queue.grad is None
    opt.step()
    for n, before in watched.items():
        assert not torch.equal(before, dict(model.named_parameters())[n]), n


def test_part2_runs_on_all_rois():
    model = _model()
    part2_in = InputShapes(model.backbone.res4)
    part2_out = InputShapes(model.backbone.res5)
    model.train()
    model(scene_inputs())
    # training: one Part-2 call on the 32 sampled RoIs of each of the 2 images
    assert part2_in.sizes == [64] and part2_out.sizes == [64]
    model.eval()
    part2_in.shapes.clear()
    with torch.no_grad():
        images = model.preprocess(scene_inputs())
        proposals, _ = model.rpn(images, {"part1": model.part1(images.tensors)})
        part2_in.shapes.clear()
        outputs = model(scene_inputs())
    # inference: every proposal after the RPN NMS goes through Part-2 (not only detections)
    assert part2_in.sizes == [sum(len(p) for p in proposals)]
    assert part2_in.sizes[0] > sum(len(o["boxes"]) for o in outputs) > 0


def test_inference_contract():
    model = _model()
    model.eval()
    inputs = scene_inputs()
    snapshot = copy.deepcopy(inputs)
    outputs = model(inputs)
    assert len(outputs) == 2
    for x, out in zip(inputs, outputs):
        assert set(out) == {"boxes", "scores", "features"}
        n = len(out["boxes"])
        assert 0 < n <= 20
        assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,)
        assert out["features"].shape == (n, 16)
        torch.testing.assert_close(out["features"].norm(dim=1), torch.ones(n))
        b = out["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= x["width"]).all() and (b[:, 3] <= x["height"]).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert (out["scores"][:-1] >= out["scores"][1:]).all()
    # the second image is reported at its original (2x) scale: some boxes exceed the tensor
    assert outputs[1]["boxes"][:, 2].max() > 90
    for a, b in zip(inputs, snapshot):  # inputs are not modified
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["gt_boxes"], b["gt_boxes"])


def test_query_feature_of_a_given_box():
    model = _model()
    model.eval()
    inputs = scene_inputs()
    box_original = torch.tensor([40.0, 20.0, 80.0, 110.0])  # image "b" is shown at half size
    q = model.extract_query([dict(inputs[1], query_box=box_original)])
    feat = q[0]["query_feature"]
    assert feat.shape == (16,)
    torch.testing.assert_close(feat.norm(), torch.tensor(1.0))
    # by hand: Part-1 on the image, RoIAlign of the rescaled box, Part-2, GAP, FC-BN, L2
    with torch.no_grad():
        x = (inputs[1]["image"] - model.pixel_mean) / model.pixel_std
        pad = torch.zeros(1, 3, 64, 96)
        pad[0, :, :60, :90] = x
        fmap = model.backbone.forward_stages(pad, "stem", "res3")
        rois = roi_align(fmap, [box_original[None] / 2], (8, 4), 1 / 8, 2, aligned=True)
        pooled = F.adaptive_avg_pool2d(model.backbone.forward_stages(rois, "res4", "res5"), 1)
        expected = F.normalize(model.embedding(pooled.flatten(1)), dim=1)[0]
    torch.testing.assert_close(feat, expected, atol=1e-5, rtol=1e-4)
    # same box given for an input whose original size equals the tensor size
    same = dict(inputs[1], height=60, width=90, query_box=box_original / 2)
    torch.testing.assert_close(model.extract_query([same])[0]["query_feature"], feat)
    with pytest.raises(KeyError, match="query_box"):
        model.extract_query([inputs[0]])


def test_detection_loss_falls_when_overfitting_one_batch():
    model = _model(**{"MODEL.LOSSES.OIM.ENABLED": False})
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    totals, rpn = [], []
    for _ in range(10):
        torch.manual_seed(5)  # same anchor / RoI sampling draws every step
        losses = model(scene_inputs())
        totals.append(float(sum(losses.values()).detach()))
        rpn.append(float(losses["loss_rpn_cls"].detach()))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert totals[-1] < 0.9 * totals[0], totals
    assert rpn[-1] < rpn[0], rpn


def test_constructor_checks():
    model = _model()
    kw = dict(
        backbone=model.backbone, detector=model.detector,
        oim_loss=model.oim_loss, pixel_mean=[0, 0, 0], pixel_std=[1, 1, 1],
    )  # fmt: skip
    with pytest.raises(ValueError, match="PART1_END"):
        OIMSearch(**kw, part1_end="res5", embedding_dim=16)
    with pytest.raises(ValueError, match="EMBEDDING_DIM"):
        OIMSearch(**kw, embedding_dim=32)
    with pytest.raises(TypeError, match="staged ResNet"):
        OIMSearch(**dict(kw, backbone=torch.nn.Conv2d(3, 3, 1)), embedding_dim=16)
    no_oim = _model(**{"MODEL.LOSSES.OIM.ENABLED": False})
    no_oim.train()
    assert "loss_oim" not in no_oim(scene_inputs())
