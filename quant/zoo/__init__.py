"""The float SeesawFaceNet model zoo.

>>> from quant.zoo import build, preprocess
>>> model = build("seesaw_shuffle").eval()
>>> emb = model(preprocess(faces_uint8_nhwc))      # (N, 512), L2-normalised

Input convention: faces are ``uint8`` arrays of shape ``(N, 112, 112, 3)`` (NHWC, RGB), as they
are stored on disk and streamed into the hardware. :func:`preprocess` turns them into the float
NCHW tensor the network takes, with the reference normalisation ``(x - 127.5) / 128``.
"""
import numpy as np
import torch

from .network import SeesawFaceNet, VariantSpec

_SEESAW = dict(stem=64, widths=(64, 128, 128), down_expand=(128, 256, 512),
               res_expand=(128, 256, 256))
_DW = dict(stem=96, widths=(96, 192, 192), down_expand=(192, 384, 768),
           res_expand=(192, 384, 384), depths=(8, 12, 4))

VARIANTS = {s.name: s for s in (
    VariantSpec("seesaw_shuffle", depths=(4, 6, 2), routing="shuffle", **_SEESAW,
                description="SeesawFaceNet, shuffle blocks (paper Table 1)",
                paper_params="1.3 M", paper_macs="146 M"),
    VariantSpec("seesaw_share", depths=(4, 6, 2), routing="share", **_SEESAW,
                description="SeesawFaceNet, share blocks (paper Table 1)",
                paper_params="1.3 M", paper_macs="146 M"),
    VariantSpec("seesaw_shuffle_mobi", depths=(2, 3, 6), routing="shuffle", **_SEESAW,
                description="SeesawFaceNet with MobiFace depths 2/3/6 (paper Table 2; "
                            "no reference code, built from the table)",
                has_reference_code=False),
    VariantSpec("dw_seesaw_v1", routing="shuffle", mapping="conv_s2", **_DW,
                description="DW-SeesawFaceNet v1: mapping = 1x1 stride-2 Conv_block",
                paper_params="4.1 M", paper_macs="514 M"),
    VariantSpec("dw_seesaw_v2", routing="shuffle", mapping="maxpool_conv", **_DW,
                description="DW-SeesawFaceNet v2: mapping = MaxPool 2x2 + 1x1 Conv_block",
                paper_params="4.2 M", paper_macs="526 M"),
    VariantSpec("mobilefacenet", depths=(4, 6, 2), block="inverted_residual", **_SEESAW,
                description="MobileFaceNet baseline, 512-d, swish (reference Depth_Wise blocks)",
                paper_params="1.2 M", paper_macs="221 M"),
)}

INPUT_SIZE = 112
MEAN, STD = 127.5, 128.0


def variant(name: str) -> VariantSpec:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def build(name: str) -> SeesawFaceNet:
    """A freshly initialised float model of the named variant."""
    return SeesawFaceNet(variant(name))


def preprocess(faces) -> torch.Tensor:
    """uint8 faces ``(N, 112, 112, 3)`` (or one face ``(112, 112, 3)``) -> float NCHW input."""
    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[None]
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"faces must be uint8 of shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), "
                         f"not {faces.dtype} {faces.shape}")
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float()
    return (x - MEAN) / STD
