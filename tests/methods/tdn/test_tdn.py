"""TDN: Part-2 on final boxes only, KTB, frozen teacher and L_t, w(epoch), RCP wiring."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reid_plugins.checkpoint import Checkpointer
from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog
from reid_plugins.methods.tdn.config import add_tdn_config
from reid_plugins.methods.tdn.model import TDN
from reid_plugins.methods.tdn.trainer import (
    TDNTrainer,
    TeacherWeightHook,
    iters_per_epoch,
    teacher_weight,
)
from reid_plugins.modeling import build_model
from reid_plugins.modeling.backbone.resnet import ResNet
from reid_plugins.modeling.heads.embedding_head import EmbeddingHead
from reid_plugins.modeling.losses import CrossEntropyLoss
from reid_plugins.modeling.meta_arch.baseline import ReIDBaseline
from reid_plugins.solver import build_optimizer
from tests._person_search_helpers import (
    InputShapes,
    merge_overrides,
    scene_inputs,
    tiny_search_cfg,
)

pytestmark = pytest.mark.usefixtures("single_thread")

#: the gt-and-proposals RoI switch, for tests of other parts that need person RoIs in every step
GT_ROIS = {"MODEL.TDN.REID.TRAIN_ROIS": "gt_and_proposals"}

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def _cfg(ktb_size=(32, 16), **kw):
    cfg = tiny_search_cfg("TDN")
    cfg.MODEL.BACKBONE.WITH_IBN = True
    ps = cfg.MODEL.PERSON_SEARCH
    ps.ROI_HEADS.POOLER_RESOLUTION = [ktb_size[0] // 8, ktb_size[1] // 8]
    ps.ROI_HEADS.DETECTIONS_PER_IMAGE = 5
    t = cfg.MODEL.TDN
    t.BOX_HEAD.FC_DIM = 32
    t.KTB.INPUT_SIZE = list(ktb_size)
    t.REID.NUM_PIDS = 6
    t.TEACHER.ENABLED = False
    return merge_overrides(cfg, kw)


def _teacher(seed=3):
    torch.manual_seed(seed)
    return ReIDBaseline(
        backbone=ResNet(depth=18, base_width=8),
        head=EmbeddingHead(feat_dim=64, num_classes=4),
        pixel_mean=MEAN,
        pixel_std=STD,
        ce_loss=CrossEntropyLoss(),
    )


def _model(teacher=True, ktb_size=(32, 16), **kw):
    torch.manual_seed(0)
    model = build_model(_cfg(ktb_size, **kw))
    if teacher:
        model.set_teacher(_teacher(), ktb_size)
    return model


# --------------------------------------------------------------------------- config
def test_config_adder_is_idempotent_and_registered():
    cfg = add_all_configs(get_cfg())
    assert cfg.MODEL.TDN.KTB.INPUT_SIZE == [256, 128]
    assert cfg.MODEL.TDN.BOX_HEAD.FC_DIM == 1024 and cfg.MODEL.TDN.TEACHER.W_INIT == 5.0
    cfg.MODEL.TDN.REID.NUM_PIDS = 7
    add_tdn_config(cfg)
    assert cfg.MODEL.TDN.REID.NUM_PIDS == 7  # existing values untouched


# --------------------------------------------------------------------------- Part-2 / KTB
def test_part2_runs_only_on_final_detections_at_inference():
    model = _model(teacher=False).eval()
    part2, box_head = InputShapes(model.backbone.res4), InputShapes(model.box_head)
    out = model(scene_inputs())
    # the RoI head sees every RPN proposal (50 per image), Part-2 only the final boxes
    assert box_head.total == 100
    assert part2.total == sum(len(o["boxes"]) for o in out) == 10
    for o in out:
        assert o["features"].shape == (len(o["boxes"]), model.feature_dim)
        torch.testing.assert_close(o["features"].norm(dim=1), torch.ones(len(o["boxes"])))
    # boxes of the second input are in its original (2x larger) coordinates
    assert float(out[1]["boxes"][:, 2].max()) > 90
    # score threshold 0.5: only boxes scoring >= 0.5 reach Part-2
    model.detector.score_thresh_test = 0.5
    part2.shapes.clear()
    out = model(scene_inputs())
    kept = sum(len(o["boxes"]) for o in out)
    assert part2.total == kept and all(bool((o["scores"] >= 0.5).all()) for o in out)


def test_gt_and_proposals_switch_gives_gt_plus_matched_proposals():
    model = _model(teacher=False, **{"MODEL.TDN.REID.TRAIN_ROIS": "gt_and_proposals",
                                     "MODEL.TDN.REID.TRAIN_PROPOSALS_PER_IMAGE": 2}).train()  # fmt: skip
    part2 = InputShapes(model.backbone.res4)
    model.training_detections = None  # this switch never asks for the detections
    model(scene_inputs())
    # 3 ground-truth boxes + at most 2 matched proposals per image, never the 64 sampled RoIs
    assert len(part2.shapes) == 1 and 3 <= part2.total <= 3 + 2 * 2
    gt = [torch.tensor([[10.0, 8.0, 30.0, 60.0]]), torch.tensor([[0.0, 0.0, 8.0, 8.0]])]
    props = [torch.tensor([[11.0, 9.0, 30.0, 59.0], [60.0, 40.0, 90.0, 60.0]]), torch.zeros(0, 4)]
    boxes, pids = model.gt_and_proposal_rois(props, gt, [torch.tensor([-1]), torch.tensor([4])])
    assert [len(b) for b in boxes] == [2, 1]
    assert pids.tolist() == [-1, -1, 4]  # the matched proposal inherits the unlabelled pid


def test_default_training_rois_are_the_detections_matched_to_persons():
    model = _model(teacher=False).train()
    assert model.train_rois == "detections" and model.train_detection_iou == 0.5
    # matching by hand: person A (labelled 0) at x 10..30, person B (unlabelled) at 50..70
    gt = [torch.tensor([[10.0, 8.0, 30.0, 60.0], [50.0, 4.0, 70.0, 50.0]]), torch.zeros(0, 4)]
    dets = [
        torch.tensor([
            [10.0, 8.0, 30.0, 60.0],   # A exactly -> 0
            [12.0, 8.0, 32.0, 60.0],   # A, IoU 18/22 = 0.82 -> 0 (duplicates both kept)
            [50.0, 4.0, 70.0, 30.0],   # B, IoU 26/46 = 0.565 -> -1 (unlabelled)
            [50.0, 4.0, 70.0, 20.0],   # B, IoU 16/46 = 0.348 -> background, dropped
            [80.0, 0.0, 90.0, 10.0],   # nobody -> dropped
        ]),  # fmt: skip
        torch.tensor([[0.0, 0.0, 5.0, 5.0]]),  # an image without persons -> nothing
    ]
    boxes, pids = model.detection_rois(dets, gt, [torch.tensor([0, -1]), torch.zeros(0).long()])
    assert [len(b) for b in boxes] == [3, 0] and pids.tolist() == [0, 0, -1]
    torch.testing.assert_close(boxes[0], dets[0][:3])
    # in forward, Part-2 sees exactly the matched detections (no gt box, no sampled RoI)
    inputs = scene_inputs()
    fixed = [dets[0], torch.tensor([[20.0, 10.0, 40.0, 55.0], [0.0, 0.0, 4.0, 4.0]])]
    model.training_detections = lambda images, features, proposals: fixed
    seen = []
    real = model.reid_losses
    model.reid_losses = lambda im, f, b, p: seen.append((b, p)) or real(im, f, b, p)
    losses = model(inputs)
    ((b, p),) = seen
    torch.testing.assert_close(b[0], dets[0][:3])
    torch.testing.assert_close(b[1], fixed[1][:1])
    assert p.tolist() == [0, 0, -1, 3] and "loss_reid_ce" in losses
    # no person detected: the re-ID losses are zero but present (stable loss keys)
    model.training_detections = lambda images, features, proposals: [torch.zeros(0, 4)] * 2
    losses = model(inputs)
    assert float(losses["loss_reid_ce"].detach()) == 0.0


def test_training_detections_equal_inference_detections():
    model = _model(teacher=False).eval()
    inputs = scene_inputs()
    images = model.preprocess(inputs)
    features = model.part1(images.tensors)
    proposals, _ = model.rpn(images, {"part1": features})
    expected = [b for b, _ in model.detect(images, features)]
    got = model.training_detections(images, features, proposals)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    with pytest.raises(ValueError, match="TRAIN_ROIS"):
        _model(teacher=False, **{"MODEL.TDN.REID.TRAIN_ROIS": "gt"})


def test_ktb_crops_are_256x128_and_its_weights_are_not_shared():
    model = _model(teacher=False, ktb_size=(256, 128), **GT_ROIS).train()
    ktb_in = InputShapes(model.ktb.part1[0])
    losses = model(scene_inputs())
    assert len(ktb_in.shapes) == 1 and tuple(ktb_in.shapes[0][1:]) == (3, 256, 128)
    ktb_params = list(model.ktb.parameters())
    part1_ids = {
        id(p) for n in ("stem", "res2", "res3") for p in getattr(model.backbone, n).parameters()
    }
    assert ktb_params and not part1_ids & {id(p) for p in ktb_params}
    ptrs = {p.data_ptr() for p in ktb_params}
    assert not ptrs & {p.data_ptr() for p in model.backbone.parameters()}
    # detection losses: Part-1 gets gradients, the KTB none
    det = sum(v for k, v in losses.items() if k.startswith(("loss_rpn", "loss_box")))
    det.backward(retain_graph=True)
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ktb_params)
    # the re-ID loss reaches both (KTB branch and the Part-1 RoIAlign branch), separately
    model.zero_grad()
    losses["loss_reid_ce"].backward()
    g_ktb = model.ktb.part1[0].conv1.weight.grad
    g_p1 = model.backbone.stem.conv1.weight.grad
    assert g_ktb.abs().sum() > 0 and g_p1.abs().sum() > 0 and not torch.allclose(g_ktb, g_p1)


def test_ktb_crop_is_roi_align_of_the_image():
    model = _model(teacher=False)
    img = torch.arange(64.0).view(1, 1, 64, 1).expand(1, 3, 64, 96).contiguous()  # row index
    crop = model.ktb.crop(img, [torch.tensor([[16.0, 16.0, 32.0, 48.0]])])
    assert crop.shape == (1, 3, 32, 16)
    # rows 16..48 sampled at 32 bin centres (pixel centres at +0.5, aligned RoIAlign)
    expected = 16.0 + (torch.arange(32.0) + 0.5) * 1.0 - 0.5
    torch.testing.assert_close(crop[0, 0, :, 0], expected, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- teacher
def test_teacher_frozen_in_eval_mode_without_gradient_and_outside_the_student():
    model = _model(**GT_ROIS, **{"MODEL.TDN.REID.TRAIN_PROPOSALS_PER_IMAGE": 0})
    teacher = model.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model.train()
    assert model.training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    losses = model(scene_inputs())
    sum(losses.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():  # BN statistics untouched
        torch.testing.assert_close(v, before[k])
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    opt = build_optimizer(_cfg(), model)
    assert not teacher_ids & {id(p) for g in opt.param_groups for p in g["params"]}
    assert len(model.state_dict()) == len(_model(teacher=False).state_dict())
    model.double()  # _apply reaches the teacher (as .to(device) does)
    assert next(teacher.parameters()).dtype == torch.float64


def test_teacher_loss_is_eq2_on_all_rois_and_ce_on_labelled_only():
    model = _model(**GT_ROIS, **{"MODEL.TDN.REID.TRAIN_PROPOSALS_PER_IMAGE": 0}).train()
    model.set_teacher_weight(2.5)
    inputs = scene_inputs()
    torch.manual_seed(5)
    losses = model(inputs)
    # recompute on the same 3 gt boxes (1 unlabelled): features, teacher on 0-255 crops
    images = model.preprocess(inputs)
    boxes = [x["gt_boxes"] for x in inputs]
    with torch.no_grad():
        out = model.reid_branch(images.tensors, model.part1(images.tensors), boxes)
        raw = out["crops"] * model.pixel_std + model.pixel_mean
        f_t = F.normalize(
            torch.stack([r["feature"] for r in model.teacher([{"image": c} for c in raw])]), dim=1
        )
    f_s = F.normalize(out["feature"], dim=1)
    expected = 2.5 * ((f_s - f_t) ** 2).sum(dim=1).mean()  # K = 3 RoIs incl. the unlabelled
    torch.testing.assert_close(losses["loss_teacher"].detach(), expected, atol=1e-5, rtol=1e-4)
    labelled = torch.tensor([True, False, True])
    ce = F.cross_entropy(out["logits"][labelled], torch.tensor([0, 3]))
    torch.testing.assert_close(losses["loss_reid_ce"].detach(), ce, atol=1e-5, rtol=1e-4)


def test_teacher_from_config_file_and_checkpoint(tmp_path):
    teacher_yaml = tmp_path / "teacher.yaml"
    teacher_yaml.write_text(
        "MODEL:\n  META_ARCHITECTURE: ReIDBaseline\n  DEVICE: cpu\n"
        "  BACKBONE: {DEPTH: 18, BASE_WIDTH: 8, LAST_STRIDE: 1}\n"
        "  LOSSES: {CE: {ENABLED: True}, TRIPLET: {ENABLED: True}}\n"
        "INPUT: {SIZE_TEST: [32, 16]}\n"
    )
    teacher = _teacher(seed=7)
    Checkpointer(teacher, str(tmp_path)).save("teacher")
    cfg = _cfg(**{"MODEL.TDN.TEACHER.ENABLED": True,
                  "MODEL.TDN.TEACHER.CONFIG_FILE": str(teacher_yaml),
                  "MODEL.TDN.TEACHER.WEIGHTS": str(tmp_path / "teacher.pth")})  # fmt: skip
    assert build_model(cfg).teacher is None  # inference model: the teacher is never built
    model = TDNTrainer.build_model(cfg, [6])  # training model: the trainer attaches it
    assert isinstance(model.teacher, ReIDBaseline) and model.teacher_input_size == (32, 16)
    assert (
        getattr(model.teacher.head, "classifier", None) is None
    )  # built as an inference model of its config
    for k, v in model.teacher.state_dict().items():
        torch.testing.assert_close(v, teacher.state_dict()[k])
    assert not any("teacher" in k for k in model.state_dict())
    # a teacher of another feature size needs the projection
    teacher_yaml.write_text(teacher_yaml.read_text().replace("BASE_WIDTH: 8", "BASE_WIDTH: 4"))
    small = ReIDBaseline(
        backbone=ResNet(depth=18, base_width=4),
        head=EmbeddingHead(feat_dim=32, num_classes=4),
        pixel_mean=MEAN,
        pixel_std=STD,
        ce_loss=CrossEntropyLoss(),
    )
    Checkpointer(small, str(tmp_path)).save("teacher")
    with pytest.raises(ValueError, match="PROJECTION"):
        TDNTrainer.build_model(cfg, [6])
    cfg.MODEL.TDN.TEACHER.PROJECTION = True
    model = TDNTrainer.build_model(cfg, [6])
    assert model.projection.out_features == 32
    assert any(p is model.projection.weight for p in model.parameters())  # trained
    # TEACHER.OPTS: overrides of the teacher config (here back to the checkpoint's width 4)
    teacher_yaml.write_text(teacher_yaml.read_text().replace("BASE_WIDTH: 4", "BASE_WIDTH: 8"))
    cfg.MODEL.TDN.TEACHER.PROJECTION = False
    with pytest.raises(ValueError, match="does not fit"):
        TDNTrainer.build_model(cfg, [6])
    cfg.MODEL.TDN.TEACHER.OPTS = ["MODEL.BACKBONE.BASE_WIDTH", "4"]
    with pytest.raises(ValueError, match="PROJECTION"):  # built at width 4: the checkpoint fits
        TDNTrainer.build_model(cfg, [6])
    cfg.MODEL.TDN.TEACHER.OPTS = ["MODEL.BACKBONE.NOPE", "4"]
    with pytest.raises(ValueError, match="TEACHER.OPTS"):
        TDNTrainer.build_model(cfg, [6])
    cfg.MODEL.TDN.TEACHER.OPTS = []
    cfg.MODEL.TDN.TEACHER.WEIGHTS = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="TEACHER.WEIGHTS"):
        TDNTrainer.build_model(cfg, [6])
    assert build_model(cfg).teacher is None  # a missing teacher never bothers inference


# --------------------------------------------------------------------------- w(epoch)
def test_teacher_weight_eq4_and_hook():
    w = lambda e: teacher_weight(e)  # noqa: E731
    assert [w(0), w(14), w(15), w(16), w(20), w(24), w(25), w(39)] == pytest.approx(
        [5.0, 5.0, 5.0, 4.6, 3.0, 1.4, 1.0, 1.0]
    )
    for e in range(15, 25):
        assert w(e) == pytest.approx(11 - 0.4 * e)
    with pytest.raises(ValueError, match="RAMP_EPOCHS"):
        teacher_weight(3, ramp_epochs=(25, 15))
    model = _model(teacher=False)
    hook = TeacherWeightHook(model, iters_per_epoch=10)

    class _Trainer:
        iter, start_iter, storage = 0, 0, None

    hook.trainer = _Trainer()
    for it, expected in [(149, 5.0), (150, 5.0), (160, 4.6), (249, 1.4), (250, 1.0)]:
        hook.trainer.iter = it
        hook.before_step()
        assert model.teacher_weight == pytest.approx(expected)
    cfg = _cfg()
    cfg.SOLVER.IMS_PER_BATCH = 16
    assert iters_per_epoch(cfg, 5704) == 356
    cfg.SOLVER.ITERS_PER_EPOCH = 7
    assert iters_per_epoch(cfg, 5704) == 7


# --------------------------------------------------------------------------- training
def test_one_training_step_finite_and_loss_falls():
    model = _model(**GT_ROIS).train()
    inputs = scene_inputs()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    torch.manual_seed(0)
    totals = []
    for _ in range(6):
        losses = model(inputs)
        assert set(losses) == {"loss_rpn_cls", "loss_rpn_reg", "loss_box_cls", "loss_box_reg",
                               "loss_reid_ce", "loss_teacher"}  # fmt: skip
        assert all(torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        totals.append(float(total.detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert totals[-1] < totals[0]


# --------------------------------------------------------------------------- RCP wiring
class _ToyTDN(TDN):
    """TDN whose detector and embedding are tables keyed by the image width (boxes, and one
    feature per box); loaders, Part-1, outputs, extract_query and the evaluator are real."""

    toy: dict = {}

    def preprocess(self, batched_inputs):
        images = super().preprocess(batched_inputs)
        self._widths = [w for _, w in images.image_sizes]
        return images

    def detect(self, images, features):
        self.detected_images = getattr(self, "detected_images", 0) + len(self._widths)
        out = []
        for w in self._widths:
            boxes = torch.tensor(self.toy[w][0], dtype=torch.float32)
            out.append((boxes, torch.full((len(boxes),), 0.9)))
        return out

    def embed(self, images, features, boxes):
        rows = []
        for w, bs in zip(self._widths, boxes):
            table_boxes, table_feats = self.toy[w]
            for b in bs:
                i = min(range(len(table_boxes)), key=lambda j: abs(table_boxes[j][0] - float(b[0])))
                rows.append(table_feats[i])
        return F.normalize(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), dim=1)


def _register_toy(tmp_path):
    """Query image (q = e1, context person c = e4); gallery g1: the true match (cos 0.6) with
    the context person (cos 0.8); g2: a distractor (cos 0.7) with a stranger."""
    A, B = [10, 5, 30, 60], [50, 5, 70, 60]
    s = float(np.sqrt(0.51))
    images = {  # name: (width, pids, features of boxes A and B)
        "q.jpg": (96, [1, 2], [[1, 0, 0, 0], [0, 0, 0, 1]]),
        "g1.jpg": (100, [1, 2], [[0.6, 0.8, 0, 0], [0, 0.6, 0, 0.8]]),
        "g2.jpg": (104, [3, 4], [[0.7, 0, s, 0], [0, 0, 1, 0]]),
    }
    _ToyTDN.toy = {w: ([A, B], f) for w, _, f in images.values()}

    def rec(name, **kw):
        w, pids, _ = images[name]
        Image.fromarray(np.full((64, w, 3), 100, np.uint8)).save(tmp_path / name)
        return dict(file_name=str(tmp_path / name), image_id=name, height=64, width=w,
                    boxes=np.array([A, B], np.float32), pids=np.array(pids), camid=0,
                    dataset="toy", **kw)  # fmt: skip

    for name in ("toy_prw_rcp_gallery", "toy_prw_rcp_query"):
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
    gallery, query = [rec("g1.jpg"), rec("g2.jpg")], [
        rec("q.jpg", query_box=np.array(A, np.float32), query_pid=1)
    ]
    DatasetCatalog.register("toy_prw_rcp_gallery", lambda: gallery)
    DatasetCatalog.register("toy_prw_rcp_query", lambda: query)
    MetadataCatalog.get("toy_prw_rcp_gallery").set(search_protocol="prw")


def test_rcp_through_the_tdn_test_path(tmp_path):
    _register_toy(tmp_path)
    cfg = _cfg(**{"MODEL.TDN.KTB.ENABLED": False})
    cfg.DATASETS.TEST = ["toy_prw_rcp_query"]
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 200  # keep the original sizes
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    torch.manual_seed(0)
    model = _ToyTDN.from_config(cfg).eval()

    def run(rcp, b=0.3, lam=0.5):
        cfg.TEST.SEARCH.RCP.ENABLED, cfg.TEST.SEARCH.RCP.B, cfg.TEST.SEARCH.RCP.LAMBDA = rcp, b, lam
        model.detected_images = 0
        return TDNTrainer.test(cfg, model)["search"]

    assert model.query_context is False  # built with RCP off: no detector in the query pass
    plain = run(False)
    assert model.detected_images == 2  # the two gallery images only, not the query image
    assert plain["top-1"] == 0.0 and plain["mAP"] == pytest.approx(50.0)  # distractor first
    helped = run(True)  # context found with sim 0.8 >= b: 0.6 + 0.5 * 0.6 * 0.8 = 0.84 > 0.7
    assert model.detected_images == 3 and model.query_context is False  # + the query image
    assert helped["top-1"] == 100.0 and helped["mAP"] == pytest.approx(100.0)
    strict = run(True, b=0.9)  # threshold not met: no context score, ranking unchanged
    assert strict["top-1"] == 0.0 and strict["mAP"] == pytest.approx(50.0)
    # the query pass returns the query image's detections (the context persons)
    model.query_context = True
    q = model.extract_query([{"image": torch.full((3, 64, 96), 100.0), "height": 64, "width": 96,
                              "query_box": [10, 5, 30, 60], "image_id": "q.jpg"}])[0]  # fmt: skip
    assert set(q) == {"query_feature", "boxes", "scores", "features"} and len(q["boxes"]) == 2
    torch.testing.assert_close(q["query_feature"], torch.tensor([1.0, 0, 0, 0]))
    model.query_context = False
    assert set(
        model.extract_query(
            [dict(q, image=torch.zeros(3, 64, 96), height=64, width=96, query_box=[10, 5, 30, 60])]
        )[0]
    ) == {"query_feature"}
