"""A backbone registered from user code trains through the real model and trainer."""

import torch
from torch import nn

from reid_plugins.config import get_cfg
from reid_plugins.engine import SimpleTrainer
from reid_plugins.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_model


class TinyUserBackbone(Backbone):
    def __init__(self, out_channels=8):
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels, 3, stride=2, padding=1)
        self._out_features = ["res5"]
        self._out_feature_channels = {"res5": out_channels}
        self._out_feature_strides = {"res5": 2}

    def forward(self, x):
        return {"res5": torch.relu(self.conv(x))}


def test_user_registered_backbone_trains_one_iteration():
    name = "build_tiny_user_backbone"
    if name not in BACKBONE_REGISTRY:  # exactly what a user writes in their own code:

        @BACKBONE_REGISTRY.register()
        def build_tiny_user_backbone(cfg, input_shape: ShapeSpec):
            return TinyUserBackbone()

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    model = build_model(cfg)
    assert isinstance(model.backbone, TinyUserBackbone)

    g = torch.Generator().manual_seed(0)
    batch = [
        {"image": torch.rand(3, 16, 8, generator=g) * 255, "pid": i // 2, "camid": 0}
        for i in range(8)
    ]
    before = model.backbone.conv.weight.detach().clone()
    trainer = SimpleTrainer(
        model, iter(lambda: batch, None), torch.optim.SGD(model.parameters(), lr=0.1)
    )
    trainer.train(0, 1)
    assert trainer.storage.history("loss_cls").latest() > 0
    assert trainer.storage.history("loss_triplet").latest() >= 0
    assert not torch.equal(before, model.backbone.conv.weight)  # the user backbone was trained
    model.eval()
    out = model(batch[:3])
    assert len(out) == 3 and out[0]["feature"].shape == (8,)
    assert torch.allclose(out[0]["feature"].norm(), torch.tensor(1.0), atol=1e-5)
