"""The shared person-search detector (``PersonSearchDetector``) passed to OIM* and TDN as one
argument. Checkpoint keys are unchanged by it: tests/checkpoint/test_old_checkpoints.py
compares every synthetic config's state-dict keys with those recorded before."""

import os

import pytest
import torch

import reid_plugins.methods  # noqa: F401
from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.modeling import build_model
from reid_plugins.modeling.person_search import PersonSearchDetector
from tests._testing import REPO

pytestmark = pytest.mark.usefixtures("single_thread")


def _cfg(name):
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(os.path.join(REPO, "projects", name, "synthetic.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_one_detector_component_with_the_config_settings():
    cfg = _cfg("tdn")
    ps = cfg.MODEL.PERSON_SEARCH
    ps.ROI_HEADS.SCORE_THRESH_TEST, ps.ROI_HEADS.NMS_THRESH_TEST = 0.25, 0.3
    ps.ROI_HEADS.DETECTIONS_PER_IMAGE, ps.ROI_HEADS.SMOOTH_L1_BETA = 7, 0.5
    model = build_model(cfg)
    det = model.detector
    assert isinstance(det, PersonSearchDetector)
    assert (det.score_thresh_test, det.nms_thresh_test, det.detections_per_image) == (0.25, 0.3, 7)
    assert det.smooth_l1_beta == 0.5 and det.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    # the detector's modules are the model's (one registration, historic names)
    assert model.rpn is det.rpn and model.proposal_sampler is det.proposal_sampler
    assert "detector" not in dict(model.named_children())
    # its post-processing settings act on the model: at most 7 boxes with score >= 0.25
    logits = torch.tensor([[0.0, 5.0]] * 20 + [[5.0, 0.0]] * 5)
    props = [torch.tensor([[10.0 * i, 0, 10.0 * i + 8, 20] for i in range(25)])]
    ((boxes, scores, _),) = model.postprocess_batch(props, [(100, 300)], logits, torch.zeros(25, 4))
    assert len(boxes) == 7 and bool((scores >= 0.25).all())
