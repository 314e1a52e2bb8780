"""Building blocks of the SeesawFaceNet family.

Attribute names follow the public reference implementation exactly, because they become the
``state_dict`` keys that its published checkpoints use (``conv``, ``bn``, ``conv_1``,
``conv_3``, ``conv_dw``, ``se.0.fc.*``, ``project_1``, ``project_3``, ``mapping``...).
"""
import torch
from torch import nn


class Swish(nn.Module):
    """``x * sigmoid(x)``. The reference calls it ``h_swish``; it is swish, not hard-swish."""

    def __init__(self):
        super().__init__()
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(x)


class ConvBlock(nn.Module):
    """Convolution without bias, BatchNorm2d, swish (reference ``Conv_block``)."""

    def __init__(self, in_c, out_c, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.unlinearity = Swish()

    def forward(self, x):
        return self.unlinearity(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    """Convolution without bias and BatchNorm2d, no activation (reference ``Linear_block``)."""

    def __init__(self, in_c, out_c, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x):
        return self.bn(self.conv(x))


class SqueezeExcite(nn.Module):
    """Pool -> Linear(C, C/4) -> PReLU -> Linear(C/4, C) -> sigmoid -> scale channels."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.PReLU(hidden),
            nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x):
        n, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(n, c)).view(n, c, 1, 1)


def channel_shuffle(x, groups=2):
    """ShuffleNet permutation: output channel ``g*k + j`` takes input channel ``j*C/g + k``."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups=2):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)


class SeesawBlock(nn.Module):
    """Seesaw block: uneven (1/4 : 3/4) grouped pointwise expansion, optional channel shuffle,
    depthwise 3x3, squeeze-and-excitation, uneven grouped pointwise projection, and a residual
    or (DW variants) a mapping path.

    Parameters
    ----------
    in_c, out_c : int
        Block input and output channels.
    expand : int
        Expanded width E (the reference calls it ``groups``).
    stride : int
        Depthwise stride, 1 or 2.
    residual : bool
        Add the block input to the output (requires ``in_c == out_c`` and stride 1).
    routing : str
        ``"shuffle"``: shuffle after the expansion and split the projection at E/4;
        ``"share"``: no shuffle, projection split at 3E/4 (first 3/4 to ``project_3``).
    mapping : str or None
        DW-SeesawFaceNet shortcut of non-residual blocks: ``"conv_s2"`` (v1, 1x1 stride-2
        Conv_block) or ``"maxpool_conv"`` (v2, MaxPool 2x2 then 1x1 Conv_block). The reference
        creates the mapping in every block (residual ones too, unused), so we do as well to keep
        its ``state_dict`` keys.
    """

    def __init__(self, in_c, out_c, expand, stride, residual, routing="shuffle", mapping=None):
        super().__init__()
        if routing not in ("shuffle", "share"):
            raise ValueError(f"routing must be 'shuffle' or 'share', not {routing!r}")
        if in_c % 4 or out_c % 4 or expand % 4:
            raise ValueError(f"channels must be multiples of 4, not in={in_c} out={out_c} E={expand}")
        self.residual = residual
        self.routing = routing
        self.conv_1 = ConvBlock(in_c // 4, expand // 4)
        self.conv_3 = ConvBlock(in_c * 3 // 4, expand * 3 // 4)
        if routing == "shuffle":
            self.Permu = nn.Sequential(ChannelShuffle(2))
        self.conv_dw = ConvBlock(expand, expand, 3, stride, 1, groups=expand)
        self.se = nn.Sequential(SqueezeExcite(expand))
        self.project_1 = LinearBlock(expand // 4, out_c // 4)
        self.project_3 = LinearBlock(expand * 3 // 4, out_c * 3 // 4)
        self.mapping_kind = mapping
        if mapping == "conv_s2":
            self.mapping = ConvBlock(in_c, out_c, 1, 2, 0)
        elif mapping == "maxpool_conv":
            self.mapping = nn.Sequential(nn.MaxPool2d(2, 2), ConvBlock(in_c, out_c))
        elif mapping is not None:
            raise ValueError(f"mapping must be None, 'conv_s2' or 'maxpool_conv', not {mapping!r}")

    def forward(self, x):
        q = x.shape[1] // 4
        y = torch.cat((self.conv_1(x[:, :q]), self.conv_3(x[:, q:])), 1)
        if self.routing == "shuffle":
            y = self.Permu(y)
        y = self.se(self.conv_dw(y))
        e = y.shape[1]
        if self.routing == "shuffle":
            y = torch.cat((self.project_1(y[:, :e // 4]), self.project_3(y[:, e // 4:])), 1)
        else:
            y = torch.cat((self.project_3(y[:, :3 * e // 4]), self.project_1(y[:, 3 * e // 4:])), 1)
        if self.residual:
            return x + y
        if self.mapping_kind is not None:
            return self.mapping(x) + y
        return y


class InvertedResidual(nn.Module):
    """MobileFaceNet bottleneck: 1x1 Conv_block -> depthwise 3x3 Conv_block -> 1x1 Linear_block
    (reference ``Depth_Wise``)."""

    def __init__(self, in_c, out_c, expand, stride, residual):
        super().__init__()
        self.residual = residual
        self.conv = ConvBlock(in_c, expand)
        self.conv_dw = ConvBlock(expand, expand, 3, stride, 1, groups=expand)
        self.project = LinearBlock(expand, out_c)

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Stage(nn.Module):
    """A run of residual blocks; the reference keeps them in ``.model`` (``conv_3.model.0...``)."""

    def __init__(self, blocks):
        super().__init__()
        self.model = nn.Sequential(*blocks)

    def forward(self, x):
        return self.model(x)
