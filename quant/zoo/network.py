"""The SeesawFaceNet skeleton shared by every variant of the zoo.

``stem -> conv2_dw -> [down block, residual stage] x 3 -> conv_6_sep -> GDConv 7x7 -> linear
-> BatchNorm1d -> L2 normalisation``, with the reference implementation's attribute names.
"""
from dataclasses import dataclass

import torch
from torch import nn

from .layers import ConvBlock, InvertedResidual, LinearBlock, SeesawBlock, Stage


@dataclass(frozen=True)
class VariantSpec:
    """Everything that tells one member of the zoo from another.

    ``widths``: block output channels of the three stages; ``down_expand`` / ``res_expand``: the
    expanded width E of the down-sampling block and of the residual blocks of each stage;
    ``depths``: residual blocks per stage. ``block``: ``"seesaw"`` or ``"inverted_residual"``
    (MobileFaceNet). ``routing`` and ``mapping`` as in :class:`SeesawBlock`.
    """
    name: str
    stem: int
    widths: tuple
    down_expand: tuple
    res_expand: tuple
    depths: tuple
    block: str = "seesaw"
    routing: str = "shuffle"
    mapping: str = None
    embedding: int = 512
    description: str = ""
    paper_params: str = ""
    paper_macs: str = ""
    has_reference_code: bool = True


class SeesawFaceNet(nn.Module):
    """Float face-embedding network. Input: float NCHW, RGB, 112x112, already normalised with
    ``(x - 127.5) / 128`` (see :func:`quant.zoo.preprocess`). Output: (N, 512) embedding,
    L2-normalised unless ``normalize=False``."""

    def __init__(self, spec: VariantSpec):
        super().__init__()
        self.spec = spec
        s = spec
        self.conv1 = ConvBlock(3, s.stem, 3, 2, 1)
        self.conv2_dw = ConvBlock(s.stem, s.stem, 3, 1, 1, groups=s.stem)
        names = (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5"))
        c_in = s.stem
        for (down, stage), c, e_down, e_res, n in zip(
                names, s.widths, s.down_expand, s.res_expand, s.depths):
            setattr(self, down, self._block(c_in, c, e_down, 2, residual=False))
            setattr(self, stage, Stage([self._block(c, c, e_res, 1, residual=True)
                                        for _ in range(n)]))
            c_in = c
        self.conv_6_sep = ConvBlock(c_in, 512)
        self.conv_6_dw = LinearBlock(512, 512, 7, 1, 0, groups=512)
        self.linear = nn.Linear(512, s.embedding, bias=False)
        self.bn = nn.BatchNorm1d(s.embedding)

    def _block(self, c_in, c_out, expand, stride, residual):
        if self.spec.block == "inverted_residual":
            return InvertedResidual(c_in, c_out, expand, stride, residual)
        return SeesawBlock(c_in, c_out, expand, stride, residual,
                           self.spec.routing, self.spec.mapping)

    def layers(self):
        """Top-level layers in execution order, with their attribute names."""
        order = ("conv1", "conv2_dw", "conv_23", "conv_3", "conv_34", "conv_4", "conv_45",
                 "conv_5", "conv_6_sep", "conv_6_dw")
        return [(name, getattr(self, name)) for name in order]

    def forward(self, x, normalize=True):
        for _, layer in self.layers():
            x = layer(x)
        x = self.bn(self.linear(x.flatten(1)))
        return nn.functional.normalize(x, dim=1) if normalize else x
