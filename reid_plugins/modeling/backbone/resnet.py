"""ResNet-18/34/50/101 and IBN-Net-a backbones for ReID and person search.

Stages are named ``stem`` (conv1 + BN + ReLU + max-pool, stride 4) and ``res2``..``res5``
(torchvision's ``layer1``..``layer4``). Parameter names inside the stages follow torchvision's
ResNet, so ImageNet checkpoints load through a pure key renaming (:func:`load_pretrained`):

    conv1.*  -> stem.conv1.*      bn1.* -> stem.bn1.*      layerK.* -> res{K+1}.*

IBN-Net-a checkpoints (``layerX.Y.bn1.IN.*`` / ``layerX.Y.bn1.BN.*``) map the same way.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from ...checkpoint.io import read_state_dict
from .backbone import Backbone, ShapeSpec
from .build import BACKBONE_REGISTRY
from .ibn import IBN, NORM_TYPES, convert_frozen_batchnorm, get_norm
from .input_conv import InputConv2d
from .pool import MaxPool2d

__all__ = [
    "STAGE_NAMES",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "build_resnet_backbone",
    "load_pretrained",
    "torchvision_to_resnet_key",
    "resnet_to_torchvision_key",
]

logger = logging.getLogger(__name__)

#: Stage names in forward order.
STAGE_NAMES = ("stem", "res2", "res3", "res4", "res5")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Layers: ``conv1`` (3x3, ``stride``), ``bn1`` (:class:`IBN` when ``with_ibn``), ReLU,
    ``conv2`` (3x3), ``bn2``, + shortcut (``downsample`` = 1x1 conv + norm when the shape
    changes), ReLU. Output channels: ``planes``.
    """

    expansion = 1

    def __init__(
        self, *, in_channels: int, planes: int, stride: int = 1, with_ibn: bool = False, norm="BN"
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = IBN(num_channels=planes, norm=norm) if with_ibn else get_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (ResNet-50/101), stride on the 3x3 conv ("ResNet v1.5").

    Layers: ``conv1`` (1x1), ``bn1`` (:class:`IBN` when ``with_ibn``), ReLU, ``conv2`` (3x3,
    ``stride``), ``bn2``, ReLU, ``conv3`` (1x1 to ``4 * planes``), ``bn3``, + shortcut, ReLU.
    """

    expansion = 4

    def __init__(
        self, *, in_channels: int, planes: int, stride: int = 1, with_ibn: bool = False, norm="BN"
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = IBN(num_channels=planes, norm=norm) if with_ibn else get_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = get_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> Optional[nn.Module]:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        get_norm(norm, out_channels),
    )


class Stem(nn.Module):
    """7x7/2 conv, norm, ReLU (unless ``relu=False``), 3x3/2 max-pool (total stride 4).

    ``conv1`` is an :class:`~.input_conv.InputConv2d`: an ``nn.Conv2d`` whose second-order
    backward (M3L's meta-gradient) skips the image gradient nobody needs; ``maxpool`` is a
    :class:`~.pool.MaxPool2d`: ``nn.MaxPool2d`` with the CPU's faster channels-last forward
    kernel (bit-identical values and gradients).
    """

    def __init__(
        self, *, in_channels: int, out_channels: int, norm: str = "BN", relu: bool = True
    ) -> None:
        super().__init__()
        self.conv1 = InputConv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, out_channels)
        # M3L's released ResNet / IBN-Net has no ReLU here (MODEL.BACKBONE.STEM_RELU False).
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


# depth -> (block class, blocks per stage res2..res5)
_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(Backbone):
    """ResNet / IBN-Net-a backbone with named stages ``stem, res2, res3, res4, res5``.

    The stage modules are attributes of the same names; :meth:`forward_stages` runs any
    contiguous range of them (e.g. TDN's Part-1 = ``stem..res3`` and Part-2 = ``res4..res5``).
    """

    def __init__(
        self,
        *,
        depth: int,
        with_ibn: bool = False,
        last_stride: int = 1,
        base_width: int = 64,
        freeze_at: int = 0,
        out_features: Sequence[str] = ("res5",),
        norm: str = "BN",
        in_channels: int = 3,
        stem_relu: bool = True,
    ) -> None:
        """
        Args:
            depth: 18, 34 (basic blocks) or 50, 101 (bottlenecks).
            with_ibn: IBN-Net-a: ``bn1`` of every block in res2..res4 is an :class:`IBN`
                (instance norm on the first half of the channels); res5 stays plain.
            last_stride: stride of the first block of res5 (1 or 2); res5 has total stride 16
                with 1 and 32 with 2.
            base_width: stem channels and width of res2; stage ``i`` has ``base_width * 2**i``
                planes (64 = standard ResNet; 8 or 16 give tiny test networks).
            freeze_at: 0 = train everything; ``k >= 1`` freezes the first ``k`` stages
                (1 = stem, 2 = stem + res2, ..., 5 = all): ``requires_grad=False`` and their
                batch norms become ``FrozenBatchNorm2d`` (statistics never update).
            out_features: stages returned by :meth:`forward` (any of :data:`STAGE_NAMES`).
            norm: ``"BN"``, ``"SyncBN"`` or ``"FrozenBN"`` (see :func:`.ibn.get_norm`).
            in_channels: input image channels.
            stem_relu: ReLU after the stem's norm (False = the stem of M3L's released code).

        Raises:
            ValueError: an argument is out of range (the message names the config key).
        """
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(
                f"MODEL.BACKBONE.DEPTH={depth} is not supported; use {sorted(_DEPTHS)}"
            )
        if last_stride not in (1, 2):
            raise ValueError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2, got {last_stride}")
        if int(base_width) != base_width or base_width < 2:
            raise ValueError(f"MODEL.BACKBONE.BASE_WIDTH must be an integer >= 2, got {base_width}")
        if not 0 <= freeze_at <= len(STAGE_NAMES):
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT must be in 0..5, got {freeze_at}")
        if norm not in NORM_TYPES:
            raise ValueError(f"MODEL.BACKBONE.NORM='{norm}' is not supported; use {NORM_TYPES}")
        out_features = list(out_features)
        bad = [n for n in out_features if n not in STAGE_NAMES]
        if not out_features or bad:
            raise ValueError(
                f"MODEL.BACKBONE.OUT_FEATURES={out_features} must be a non-empty subset of "
                f"{list(STAGE_NAMES)}; invalid: {bad}"
            )
        self.depth, self.with_ibn, self.last_stride = depth, bool(with_ibn), last_stride
        self.base_width, self.norm, self.freeze_at = int(base_width), norm, 0

        block, num_blocks = _DEPTHS[depth]
        self.stem = Stem(
            in_channels=in_channels, out_channels=self.base_width, norm=norm, relu=stem_relu
        )
        channels, stride = self.base_width, 4
        self._out_feature_channels = {"stem": channels}
        self._out_feature_strides = {"stem": stride}
        for i, n in enumerate(num_blocks):
            name = STAGE_NAMES[i + 1]
            first_stride = 1 if i == 0 else (last_stride if i == 3 else 2)
            planes = self.base_width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(
                    block(
                        in_channels=channels,
                        planes=planes,
                        stride=first_stride if j == 0 else 1,
                        with_ibn=self.with_ibn and i < 3,
                        norm=norm,
                    )
                )
                channels = planes * block.expansion
            self.add_module(name, nn.Sequential(*blocks))
            stride *= first_stride
            self._out_feature_channels[name] = channels
            self._out_feature_strides[name] = stride
        self._out_features = out_features
        self._last_needed = max(STAGE_NAMES.index(n) for n in out_features)

        self._init_weights()
        self.freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None) -> "ResNet":
        """Build from ``cfg.MODEL.BACKBONE`` and load ``PRETRAIN_PATH`` when it is non-empty.

        Reads ``DEPTH, WITH_IBN, LAST_STRIDE, BASE_WIDTH, FREEZE_AT, OUT_FEATURES, NORM,
        STEM_RELU, PRETRAIN_PATH``; the input channels come from ``input_shape`` (default 3).
        """
        b = cfg.MODEL.BACKBONE
        in_channels = 3
        if input_shape is not None and input_shape.channels is not None:
            in_channels = input_shape.channels
        model = cls(
            depth=b.DEPTH,
            with_ibn=b.WITH_IBN,
            last_stride=b.LAST_STRIDE,
            base_width=b.BASE_WIDTH,
            freeze_at=b.FREEZE_AT,
            out_features=tuple(b.OUT_FEATURES),
            norm=b.NORM,
            in_channels=in_channels,
            stem_relu=b.STEM_RELU,
        )
        if b.PRETRAIN_PATH:
            load_pretrained(model, b.PRETRAIN_PATH)
        return model

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def freeze(self, freeze_at: int) -> "ResNet":
        """Freeze the first ``freeze_at`` stages (see ``__init__``); returns ``self``.

        Freezing is cumulative and irreversible: parameters get ``requires_grad=False`` and
        batch norms are converted to ``FrozenBatchNorm2d`` (statistics are copied).
        """
        for name in STAGE_NAMES[:freeze_at]:
            stage = getattr(self, name)
            for p in stage.parameters():
                p.requires_grad_(False)
            convert_frozen_batchnorm(stage)
        self.freeze_at = max(self.freeze_at, freeze_at)
        return self

    def stage_shape(self, name: str) -> ShapeSpec:
        """Channels and stride of any stage's output (not only the ``out_features``)."""
        if name not in STAGE_NAMES:
            raise KeyError(f"Unknown stage '{name}'; stages are {list(STAGE_NAMES)}")
        return ShapeSpec(
            channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
        )

    def forward_stages(
        self, x: torch.Tensor, start: str = "stem", end: str = "res5"
    ) -> torch.Tensor:
        """Run stages ``start..end`` (inclusive) and return the output of ``end``.

        ``x`` is the image for ``start="stem"``, otherwise the output of the stage before
        ``start`` (e.g. ``forward_stages(forward_stages(img, "stem", "res3"), "res4", "res5")``
        equals ``forward(img)["res5"]``).
        """
        i, j = self._stage_index(start), self._stage_index(end)
        if i > j:
            raise ValueError(f"forward_stages: start '{start}' comes after end '{end}'")
        for name in STAGE_NAMES[i : j + 1]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Images (N, C, H, W), normalised -> ``{name: feature map}`` for ``out_features``.

        Stages after the last requested one are not run.
        """
        if x.dim() != 4:
            raise ValueError(f"ResNet expects (N, C, H, W) input, got shape {tuple(x.shape)}")
        outputs = {}
        for name in STAGE_NAMES[: self._last_needed + 1]:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    @staticmethod
    def _stage_index(name: str) -> int:
        if name not in STAGE_NAMES:
            raise KeyError(f"Unknown stage '{name}'; stages are {list(STAGE_NAMES)}")
        return STAGE_NAMES.index(name)


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> ResNet:
    """Registered builder: :meth:`ResNet.from_config` (loads ``PRETRAIN_PATH`` if set)."""
    return ResNet.from_config(cfg, input_shape)


# ----------------------------------------------------------------------------------------- #
# Pre-trained weights
# ----------------------------------------------------------------------------------------- #
_LAYER_RE = re.compile(r"^layer([1-4])\.")
_RES_RE = re.compile(r"^res([2-5])\.")
_IGNORED_PREFIXES = ("fc.",)
_MAX_LISTED = 8


def torchvision_to_resnet_key(key: str) -> str:
    """Map a torchvision/IBN-Net state-dict key to this module's name (others unchanged)."""
    if key.startswith(("conv1.", "bn1.")):
        return "stem." + key
    m = _LAYER_RE.match(key)
    if m:
        return f"res{int(m.group(1)) + 1}." + key[m.end() :]
    return key


def resnet_to_torchvision_key(key: str) -> str:
    """Inverse of :func:`torchvision_to_resnet_key`."""
    if key.startswith("stem."):
        return key[len("stem.") :]
    m = _RES_RE.match(key)
    if m:
        return f"layer{int(m.group(1)) - 1}." + key[m.end() :]
    return key


def _read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    state = read_state_dict(path, key="MODEL.BACKBONE.PRETRAIN_PATH")
    if any(k.startswith("backbone.") for k in state):  # a whole-model checkpoint
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_pretrained(model: ResNet, path: str) -> List[str]:
    """Load ImageNet weights from a local file into ``model`` (a :class:`ResNet`).

    Accepted files: torchvision ResNet state dicts (``resnet50-*.pth``), official IBN-Net-a
    ones (``resnet50_ibn_a-*.pth``), either optionally wrapped as ``{"state_dict": ...}`` or
    ``{"model": ...}``, with ``module.`` prefixes (DataParallel) or a ``backbone.`` prefix
    (whole-model checkpoints, other keys ignored); keys may also be in this module's naming.
    ``fc.*`` is ignored; ``num_batches_tracked`` is optional.

    Returns:
        The checkpoint keys that were ignored (``fc.*``).

    Raises:
        FileNotFoundError: ``path`` does not exist (names ``MODEL.BACKBONE.PRETRAIN_PATH``).
        ValueError: the file holds no state dict, or its keys/shapes do not match the model
            (the message lists the missing, unexpected and mis-shaped keys and the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Pre-trained backbone weights not found: MODEL.BACKBONE.PRETRAIN_PATH='{path}'. "
            "Download the ImageNet checkpoint to a local file (no network access is used) or "
            "set MODEL.BACKBONE.PRETRAIN_PATH to ''."
        )
    raw = _read_state_dict(path)
    ignored = sorted(k for k in raw if k.startswith(_IGNORED_PREFIXES))
    state = {torchvision_to_resnet_key(k): v for k, v in raw.items() if k not in ignored}

    own = model.state_dict()
    optional = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in own if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in own and not optional(k)]
    mis_shaped = [
        f"{resnet_to_torchvision_key(k)} (file {tuple(v.shape)} vs model {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mis_shaped:
        lines = [
            f"Pre-trained weights '{path}' (MODEL.BACKBONE.PRETRAIN_PATH) do not match "
            f"ResNet(depth={model.depth}, with_ibn={model.with_ibn}, "
            f"base_width={model.base_width}):"
        ]
        if missing:
            names = (resnet_to_torchvision_key(k) for k in missing)
            lines.append(f"  missing in file ({len(missing)}): {_listing(names)}")
        if unexpected:
            names = (resnet_to_torchvision_key(k) for k in unexpected)
            lines.append(f"  unexpected in file ({len(unexpected)}): {_listing(names)}")
        if mis_shaped:
            lines.append(f"  shape mismatch ({len(mis_shaped)}): {_listing(mis_shaped)}")
        file_ibn = any(".IN." in k for k in state)
        if file_ibn != model.with_ibn:
            lines.append(
                f"  the file {'is' if file_ibn else 'is not'} an IBN-Net-a checkpoint: set "
                f"MODEL.BACKBONE.WITH_IBN={file_ibn}"
            )
        lines.append("  Check MODEL.BACKBONE.DEPTH / WITH_IBN / BASE_WIDTH against the file.")
        raise ValueError("\n".join(lines))

    state = {k: v for k, v in state.items() if k in own}
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    logger.info(
        "Loaded %d tensors from '%s' into ResNet-%d%s (ignored: %s)",
        len(state),
        path,
        model.depth,
        "-IBN-a" if model.with_ibn else "",
        _listing(ignored) or "none",
    )
    return ignored
