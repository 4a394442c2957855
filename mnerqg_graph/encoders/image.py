"""Image backbones: an RGB image batch in, three feature maps out (coarsest first).

Every backbone is an :class:`ImageBackbone`. It normalises its input itself (RGB in ``[0, 1]`` ->
ImageNet mean/std), so callers hand it raw images, and it declares what it returns through
:meth:`ImageBackbone.output_shape` (one :class:`ShapeSpec` per map), so the region sources, the
graph builder and the grounding head size themselves from it instead of from magic numbers.

Registered backbones (``BACKBONE_REGISTRY``):

``small_cnn``
    A from-scratch conv-BN-ReLU CNN with a light top-down (FPN-style) merge; fast on CPU and the
    default for the synthetic data set.
``resnet18_fpn``
    torchvision ResNet-18 (C3..C5) + :class:`torchvision.ops.FeaturePyramidNetwork`.
``mobilenet_v3_fpn``
    torchvision MobileNetV3 (small or large; features at strides 8/16/32) + FPN.

``small_cnn`` needs only torch; the torchvision ones need the ``vision`` extra (torchvision is
imported when one is built). Weights are never downloaded unless a user passes a torchvision weights
enum name; see :func:`load_state_dict_file` for the accepted files.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnerqg_graph.errors import CheckpointError, ConfigError
from mnerqg_graph.registry import Registry

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
NUM_SCALES = 3

_ENUM_NAME = re.compile(r"^[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class ShapeSpec:
    """The shape of one feature map a backbone returns.

    Args:
        channels: number of channels ``C``.
        stride: input pixels per feature cell; the map of an ``H x W`` input is about
            ``H / stride x W / stride`` (exactly, when ``H`` and ``W`` are multiples of ``stride``).
    """

    channels: int
    stride: int


class ImageBackbone(nn.Module):
    """Base class of image backbones.

    Subclasses implement :meth:`extract` (features of normalised images) and :meth:`output_shape`;
    :meth:`forward` normalises and calls :meth:`extract`.

    Shapes:
        - input: ``images [B, 3, H, W]``, RGB in ``[0, 1]``.
        - output: a list of exactly 3 maps, coarsest first, map ``k`` is
          ``[B, output_shape()[k].channels, H / stride_k, W / stride_k]``.
    """

    mean: Tensor
    std: Tensor

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def output_shape(self) -> list[ShapeSpec]:
        """Channels and stride of each returned map, coarsest first."""
        raise NotImplementedError

    def extract(self, x: Tensor) -> list[Tensor]:
        """Feature maps (coarsest first) of already normalised images ``x [B, 3, H, W]``."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> list[Tensor]:
        """Encode a batch of images.

        Args:
            images: RGB images in ``[0, 1]``.

        Returns:
            The feature maps, coarsest first (see the class docstring).

        Shapes:
            - images: ``[B, 3, H, W]``
            - output[k]: ``[B, C_k, H / stride_k, W / stride_k]``
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        return self.extract((images - self.mean) / self.std)

    def load_weights(self, weights: str) -> None:
        """Load a whole-backbone state dict (as saved from this class) from a local file.

        Args:
            weights: path of a ``.safetensors`` file or a ``torch.save``-d state dict.

        Raises:
            CheckpointError: the file is missing, unreadable, or its keys/shapes do not match.
        """
        state = load_state_dict_file(weights)
        load_weights_into(self, state, weights, what=type(self).__name__)


BACKBONE_REGISTRY: Registry[ImageBackbone] = Registry(
    "image backbone",
    ImageBackbone,
    doc="""Image backbones, by name.

    A registered builder takes keyword arguments only (all with defaults; e.g. ``out_channels``,
    ``weights: str | None``, ``freeze: bool``) and returns an :class:`ImageBackbone` whose
    ``forward(images [B, 3, H, W] RGB in [0, 1])`` returns exactly 3 feature maps ordered coarsest
    first (strides 32, 16, 8 by default), map ``k`` of shape ``[B, C_k, H / s_k, W / s_k]``, and
    whose ``output_shape()`` returns the matching ``[ShapeSpec(C_k, s_k)]`` coarsest first. The
    backbone normalises its input itself. It must never download anything unless the user asked
    for it by name.
    """,
)


#: Build the backbone registered under a name with its constructor arguments, or return an
#: instance as is: :meth:`~mnerqg_graph.registry.Registry.build`.
build_backbone = BACKBONE_REGISTRY.build


# --------------------------------------------------------------------------------------------------
# Weights files
# --------------------------------------------------------------------------------------------------


def load_state_dict_file(weights: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a local weights file, or a torchvision weights enum by name.

    Accepted: a ``.safetensors`` file; a ``torch.save``-d state dict (e.g. torchvision's
    ``.pth`` files), read with ``torch.load(weights_only=True)``, optionally wrapped as
    ``{"state_dict": ...}`` or ``{"model": ...}`` and with DDP's ``module.`` prefix; or a
    torchvision weights enum name such as ``"ResNet18_Weights.IMAGENET1K_V1"`` (only this form
    downloads, into torch's hub cache).

    Args:
        weights: the file path or enum name.

    Returns:
        The state dict, on CPU.

    Raises:
        CheckpointError: the file does not exist or cannot be read as a state dict.
    """
    text = str(weights)
    path = Path(text).expanduser()
    if not path.exists():
        if _ENUM_NAME.match(text):
            from torchvision.models import get_weight

            try:
                enum = get_weight(text)
            except (ValueError, KeyError, AttributeError) as exc:
                raise CheckpointError(f"unknown torchvision weights {text!r}: {exc}") from None
            return dict(enum.get_state_dict(progress=True))
        raise CheckpointError(f"{text}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise CheckpointError(
            f"{path}: cannot read weights ({type(exc).__name__}: {exc})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _require_torchvision(what: str) -> None:
    """Raise a one-line :class:`ConfigError` when torchvision (the ``vision`` extra) is missing."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{what} needs torchvision: pip install 'mnerqg-graph[vision]' (or torchvision)"
        ) from None


def load_weights_into(
    module: nn.Module, state: Mapping[str, Tensor], source: str | Path, what: str
) -> None:
    """``module.load_state_dict(state, strict=True)`` with a one-line error naming ``source``.

    Args:
        module: the module to load into.
        state: its state dict (e.g. from :func:`load_state_dict_file`).
        source: the file the weights come from (named in the error).
        what: what ``module`` is, for the error ("the trunk of ...").

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys (the first three of each kind).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", bad_shape)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label} keys {', '.join(keys[:3])}{more}")
        raise CheckpointError(f"{source}: weights do not fit {what}: {'; '.join(parts)}")
    module.load_state_dict(dict(state), strict=True)


class _PretrainedFPNBackbone(ImageBackbone):
    """Shared weights/freeze handling of the torchvision trunk + FPN backbones.

    Subclasses set ``self.body`` (the trunk), ``self.fpn`` and ``_trunk_prefix`` /
    ``_head_prefixes`` (how a torchvision classification state dict's keys map onto ``self.body``).
    """

    body: nn.Module
    fpn: nn.Module
    _trunk_prefix: str = ""
    _head_prefixes: tuple[str, ...] = ()

    def __init__(self, freeze: bool) -> None:
        super().__init__()
        self.freeze = freeze

    def _finish(self, weights: str | None) -> None:
        if weights is not None:
            self.load_weights(weights)
        if self.freeze:
            for p in self.body.parameters():
                p.requires_grad_(False)
            self.body.eval()

    def load_weights(self, weights: str) -> None:
        """Load weights: a whole-backbone state dict, or a torchvision classifier's state dict.

        A state dict whose keys are this module's (``body.*``, ``fpn.*``) loads into the whole
        backbone; otherwise it is read as the torchvision classification model's state dict and
        loads into the trunk (its classifier keys are ignored; the FPN keeps its initialisation).

        Args:
            weights: a local file path or a torchvision weights enum name
                (see :func:`load_state_dict_file`).

        Raises:
            CheckpointError: the file is missing, unreadable, or fits neither layout.
        """
        state = load_state_dict_file(weights)
        if any(k.startswith(("body.", "fpn.")) for k in state):
            load_weights_into(self, state, weights, what=type(self).__name__)
            return
        trunk = {
            k[len(self._trunk_prefix) :]: v
            for k, v in state.items()
            if k.startswith(self._trunk_prefix) and not k.startswith(self._head_prefixes)
        }
        load_weights_into(self.body, trunk, weights, what=f"the trunk of {type(self).__name__}")

    def train(self, mode: bool = True) -> _PretrainedFPNBackbone:
        """Set training mode; a frozen trunk stays in eval mode (fixed BatchNorm statistics)."""
        super().train(mode)
        if self.freeze:
            self.body.eval()
        return self


# --------------------------------------------------------------------------------------------------
# small_cnn
# --------------------------------------------------------------------------------------------------


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@BACKBONE_REGISTRY.register("small_cnn")
class SmallCNN(ImageBackbone):
    """A small from-scratch CNN with a top-down FPN merge (fast on CPU).

    Stages halve the resolution with a stride-2 conv-BN-ReLU followed by a stride-1 one; channels
    go ``width`` (strides 2, 4), ``2 * width`` (8), ``4 * width`` (16 and coarser). The last three
    stages feed a light FPN-style top-down merge (1x1 lateral conv-BN, nearest upsampling and add,
    3x3 conv-BN), so every scale also sees the coarser scales' context and all maps have
    ``out_channels`` channels. Needs only torch.

    Args:
        width: channels of the first stages.
        out_channels: channels of every returned map.
        min_stride: stride of the finest map (a power of two >= 4); the maps have strides
            ``4 * min_stride, 2 * min_stride, min_stride`` (default 32, 16, 8).
        weights: optional local file with a state dict saved from this class.

    Shapes:
        - images: ``[B, 3, H, W]``
        - output: ``[B, out_channels, H / s, W / s]`` for ``s`` in ``(4, 2, 1) * min_stride``.
    """

    def __init__(
        self,
        width: int = 32,
        out_channels: int = 64,
        min_stride: int = 8,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if min_stride < 4 or min_stride & (min_stride - 1):
            raise ConfigError(f"small_cnn min_stride must be a power of two >= 4, got {min_stride}")
        if width < 1 or out_channels < 1:
            raise ConfigError("small_cnn width and out_channels must be positive")
        self.out_channels = out_channels
        self.strides = [4 * min_stride, 2 * min_stride, min_stride]
        num_stages = (4 * min_stride).bit_length() - 1  # log2 of the coarsest stride
        stages: list[nn.Module] = []
        channels: list[int] = []
        cin = 3
        for k in range(1, num_stages + 1):  # stage k has stride 2**k
            cout = width * min(2 ** max(k - 2, 0), 4)
            stages.append(nn.Sequential(_conv_bn_relu(cin, cout, 2), _conv_bn_relu(cout, cout, 1)))
            channels.append(cout)
            cin = cout
        self.stages = nn.ModuleList(stages)
        # top-down merge over the last three stages, index 0 = finest
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
            for c in channels[-3:]
        )
        self.smooth = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
            )
            for _ in range(3)
        )
        if weights is not None:
            self.load_weights(weights)

    def output_shape(self) -> list[ShapeSpec]:
        """``out_channels`` at strides ``4, 2, 1`` x ``min_stride``, coarsest first."""
        return [ShapeSpec(self.out_channels, s) for s in self.strides]

    def extract(self, x: Tensor) -> list[Tensor]:
        """Feature maps, coarsest first, of normalised images ``x [B, 3, H, W]``."""
        taps: list[Tensor] = []
        first_tap = len(self.stages) - 3
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k >= first_tap:
                taps.append(x)  # finest first
        outs: list[Tensor] = []
        top: Tensor | None = None
        for i in (2, 1, 0):  # coarsest first
            lat = self.lateral[i](taps[i])  # (B, out_channels, h_i, w_i)
            if top is not None:
                lat = lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
            top = lat
            outs.append(self.smooth[i](lat))
        return outs


# --------------------------------------------------------------------------------------------------
# resnet18_fpn
# --------------------------------------------------------------------------------------------------


@BACKBONE_REGISTRY.register("resnet18_fpn")
class ResNet18FPN(_PretrainedFPNBackbone):
    """torchvision ResNet-18 body (C3, C4, C5) with a torchvision ``FeaturePyramidNetwork``.

    Needs torchvision (the ``vision`` extra).

    Args:
        out_channels: channels of every returned map.
        weights: ``None`` (random init), a local file (a torchvision ``resnet18`` state dict such
            as ``resnet18-f37072fd.pth``, or a whole-backbone state dict saved from this class;
            ``.safetensors`` or ``torch.save`` format), or a torchvision enum name like
            ``"ResNet18_Weights.IMAGENET1K_V1"`` (downloads; for users with internet).
        freeze: freeze the ResNet body (no gradients, BatchNorm statistics fixed); the FPN trains.

    Shapes:
        - images: ``[B, 3, H, W]``
        - output: ``[B, out_channels, H / s, W / s]`` for ``s`` in ``(32, 16, 8)``.
    """

    _head_prefixes = ("fc.",)

    def __init__(
        self, out_channels: int = 128, weights: str | None = None, freeze: bool = False
    ) -> None:
        _require_torchvision("resnet18_fpn")
        from torchvision.models import resnet18
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__(freeze)
        self.out_channels = out_channels
        trunk = resnet18(weights=None)
        self.body = IntermediateLayerGetter(
            trunk, return_layers={"layer2": "c3", "layer3": "c4", "layer4": "c5"}
        )
        self.fpn = FeaturePyramidNetwork([128, 256, 512], out_channels)
        self._finish(weights)

    def output_shape(self) -> list[ShapeSpec]:
        """``out_channels`` at strides 32, 16, 8."""
        return [ShapeSpec(self.out_channels, s) for s in (32, 16, 8)]

    def extract(self, x: Tensor) -> list[Tensor]:
        """Feature maps P5, P4, P3 of normalised images ``x [B, 3, H, W]``."""
        out = self.fpn(self.body(x))
        return list(out.values())[::-1]


# --------------------------------------------------------------------------------------------------
# mobilenet_v3_fpn
# --------------------------------------------------------------------------------------------------


def _block_stride_and_channels(block: nn.Module) -> tuple[int, int]:
    """Spatial stride and output channels of one block of a torchvision MobileNetV3 ``features``."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    stride = 1
    for conv in convs:
        s = conv.stride
        stride *= s[0] if isinstance(s, tuple) else int(s)
    return stride, convs[-1].out_channels


@BACKBONE_REGISTRY.register("mobilenet_v3_fpn")
class MobileNetV3FPN(_PretrainedFPNBackbone):
    """torchvision MobileNetV3 features at strides 8, 16, 32 with an FPN.

    The taps are the last blocks of ``features`` at each stride (found from the conv strides, so
    both variants work without hard-coded indices). Needs torchvision (the ``vision`` extra).

    Args:
        variant: ``"small"`` or ``"large"``.
        out_channels: channels of every returned map.
        weights: ``None``, a local file (a torchvision ``mobilenet_v3_*`` state dict or a
            whole-backbone state dict saved from this class), or a torchvision enum name like
            ``"MobileNet_V3_Small_Weights.IMAGENET1K_V1"`` (downloads).
        freeze: freeze the MobileNet features (no gradients, BatchNorm statistics fixed).

    Shapes:
        - images: ``[B, 3, H, W]``
        - output: ``[B, out_channels, H / s, W / s]`` for ``s`` in ``(32, 16, 8)``.
    """

    body: nn.Sequential
    _trunk_prefix = "features."
    _head_prefixes = ("classifier.",)

    def __init__(
        self,
        variant: Literal["small", "large"] = "small",
        out_channels: int = 128,
        weights: str | None = None,
        freeze: bool = False,
    ) -> None:
        _require_torchvision("mobilenet_v3_fpn")
        from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__(freeze)
        if variant not in ("small", "large"):
            raise ConfigError(
                f"mobilenet_v3_fpn variant must be 'small' or 'large', got {variant!r}"
            )
        self.out_channels = out_channels
        model = (
            mobilenet_v3_small(weights=None)
            if variant == "small"
            else mobilenet_v3_large(weights=None)
        )
        self.body = model.features
        stride = 1
        last_at: dict[int, tuple[int, int]] = {}  # stride -> (block index, channels)
        for i, block in enumerate(self.body):
            s, c = _block_stride_and_channels(block)
            stride *= s
            last_at[stride] = (i, c)
        self._taps = [last_at[s][0] for s in (8, 16, 32)]  # finest first
        self.fpn = FeaturePyramidNetwork([last_at[s][1] for s in (8, 16, 32)], out_channels)
        self._finish(weights)

    def output_shape(self) -> list[ShapeSpec]:
        """``out_channels`` at strides 32, 16, 8."""
        return [ShapeSpec(self.out_channels, s) for s in (32, 16, 8)]

    def extract(self, x: Tensor) -> list[Tensor]:
        """FPN maps at strides 32, 16, 8 of normalised images ``x [B, 3, H, W]``."""
        taps: OrderedDict[str, Tensor] = OrderedDict()
        for i, block in enumerate(self.body):
            x = block(x)
            if i in self._taps:
                taps[str(i)] = x
            if i == self._taps[-1]:
                break
        out = self.fpn(taps)
        return list(out.values())[::-1]
