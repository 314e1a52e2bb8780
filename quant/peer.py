"""The torch.ao peer: PyTorch's own post-training static int8 quantization of a float model.

It is the yardstick for our fixed-point quantizer: how close does an off-the-shelf int8 flow
get to the float model on the same faces?

Recipe: FX graph mode (``prepare_fx`` / ``convert_fx``) with
``get_default_qconfig_mapping("fbgemm")``: activations quint8 per tensor, affine, with
HistogramObserver (reduce_range: 7-bit, as fbgemm asks); conv and linear weights qint8
symmetric per output channel (PerChannelMinMaxObserver). Conv + BatchNorm2d are folded before
quantization; the network runs under the ``fbgemm`` engine on real int8 kernels.

What torch.ao quantizes and what it leaves float (measured on seesaw_shuffle, torch 2.13, by
:func:`quantization_report`, which executes the converted graph and looks at every tensor):

* int8 (79 ``QuantizedConv2d``, 31 ``QuantizedLinear``, 15 ``QuantizedPReLU``): every
  convolution with its BatchNorm folded, depthwise ones included; the SE and final ``Linear``
  layers (the final BatchNorm1d is folded into the final Linear); swish as ``sigmoid`` (fixed
  output scale 1/256) followed by ``quantized::mul``; the SE average pool, PReLU, sigmoid and
  broadcast channel scaling; the channel ``cat`` and the shuffle (``view`` / ``transpose`` /
  ``reshape`` on quantized tensors); the residual ``add``.
* float: the 60 channel *splits* (``x[:, :C/4]``, ``x[:, C/4:]`` before the grouped pointwise
  convolutions and projections): FX does not take that slice, whose bound comes from
  ``x.shape``, for a quantized shape op, so it dequantizes, slices in float and re-quantizes
  each half with its own observed scale; the ``flatten`` before the final Linear (dequantize,
  flatten, re-quantize); and the final L2 normalisation, done outside the graph as
  the host does.

The exact list of float operations of a converted model is returned by
:func:`quantization_report` (``float_ops``); nothing here assumes it.
"""
import contextlib
import copy
import warnings
from collections import Counter

import numpy as np
import torch
from torch import fx, nn

from .zoo import preprocess


@contextlib.contextmanager
def _quiet():
    """torch.ao.quantization is deprecated in favour of torchao; silence the notices."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range.*")
        yield


class _Unnormalised(nn.Module):
    """The float model without its final L2 normalisation (traceable: no Python branch on a
    traced argument)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, normalize=False)


def _check_faces(faces, what):
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (112, 112, 3) \
            or len(faces) == 0:
        raise ValueError(f"{what} must be uint8 (N, 112, 112, 3) with N >= 1, not "
                         f"{faces.dtype} {faces.shape}")
    return faces


def torch_ao_quantize(model, calibration_faces, batch=16):
    """Post-training static int8 quantization of ``model`` (left untouched) with torch.ao,
    calibrated on uint8 NHWC ``calibration_faces``. Returns the converted ``GraphModule``; it
    maps the normalised float input to the *unnormalised* embedding."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    calibration_faces = _check_faces(calibration_faces, "calibration faces")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise RuntimeError("this PyTorch build has no fbgemm quantized engine")
    torch.backends.quantized.engine = "fbgemm"
    float_model = _Unnormalised(copy.deepcopy(model)).eval()
    example = preprocess(calibration_faces[:1])
    with _quiet(), torch.no_grad():
        prepared = prepare_fx(float_model, get_default_qconfig_mapping("fbgemm"),
                              example_inputs=(example,))
        for start in range(0, len(calibration_faces), batch):
            prepared(preprocess(calibration_faces[start:start + batch]))
        converted = convert_fx(prepared)
    report = quantization_report(converted, example)
    if report["quantized_modules"] == 0 or not report["int8_ops"]:
        raise RuntimeError("torch.ao conversion produced no quantized operations")
    converted.quantization_report = report
    return converted


_SHAPE_OPS = {"size", "dim", "shape", "__getattribute__"}


def _target_name(node):
    t = node.target
    if node.op == "call_module":
        return t
    return getattr(t, "__name__", str(t))


def quantization_report(converted: fx.GraphModule, example: torch.Tensor) -> dict:
    """Run ``converted`` once on ``example`` and classify every compute node by the tensors it
    produces: ``int8_ops`` (quantized output), ``float_ops`` (float output, other than the
    ``dequantize`` nodes themselves), plus counts of quantized module types."""
    kinds = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                kinds[n] = "int8" if out.is_quantized else "float"
            return out

    with _quiet(), torch.no_grad():
        Recorder(converted).run(example)
    modules = dict(converted.named_modules())
    module_types = Counter(type(m).__name__ for m in modules.values()
                           if type(m).__module__.startswith(("torch.ao.nn.quantized",
                                                             "torch.ao.nn.intrinsic.quantized")))
    int8_ops, float_ops = Counter(), Counter()
    for node, kind in kinds.items():
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        name = _target_name(node)
        if node.op == "call_module":
            name = type(modules[node.target]).__name__
        if name in _SHAPE_OPS or name in ("dequantize", "quantize_per_tensor"):
            continue
        (int8_ops if kind == "int8" else float_ops)[name] += 1
    return dict(quantized_modules=sum(module_types.values()),
                module_types=dict(module_types), int8_ops=dict(int8_ops),
                float_ops=dict(float_ops),
                quantize_nodes=sum(1 for n in converted.graph.nodes
                                   if _target_name(n) == "quantize_per_tensor"),
                dequantize_nodes=sum(1 for n in converted.graph.nodes
                                     if _target_name(n) == "dequantize"))


def torch_ao_embedder(model, calibration_faces):
    """Quantize once; return ``embed(faces_uint8) -> (N, 512) float`` L2-normalised."""
    converted = torch_ao_quantize(model, calibration_faces)

    def embed(faces):
        faces = _check_faces(faces, "faces")
        with _quiet(), torch.no_grad():
            return nn.functional.normalize(converted(preprocess(faces)), dim=1).numpy()
    embed.converted = converted
    return embed


def torch_ao_embeddings(model, calibration_faces, faces, batch=32) -> np.ndarray:
    """Embeddings of uint8 NHWC ``faces`` by torch.ao's int8 quantization of ``model``,
    calibrated on ``calibration_faces``: float (N, 512), L2-normalised like the float model's."""
    embed = torch_ao_embedder(model, calibration_faces)
    faces = _check_faces(faces, "faces")
    return np.concatenate([embed(faces[s:s + batch]) for s in range(0, len(faces), batch)])


def peer_cosines(model, calibration_faces, faces, embedder=None) -> dict:
    """Cosine between torch.ao int8 and float embeddings of ``faces``:
    ``dict(mean, min, per_face, report)``. ``embedder``: an existing
    :func:`torch_ao_embedder` of ``model`` (skips quantizing again)."""
    faces = _check_faces(faces, "faces")
    embed = embedder or torch_ao_embedder(model, calibration_faces)
    q = np.concatenate([embed(faces[s:s + 32]) for s in range(0, len(faces), 32)])
    model = model.eval()
    with torch.no_grad():
        f = np.concatenate([model(preprocess(faces[s:s + 32])).numpy()
                            for s in range(0, len(faces), 32)])
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    cos = np.sum(q * f, axis=1)
    return dict(mean=float(cos.mean()), min=float(cos.min()), per_face=cos.tolist(),
                report=embed.converted.quantization_report)


def main(argv=None):
    import argparse
    import json
    from pathlib import Path

    from . import faces as face_set
    from .reference_model import load_reference
    ap = argparse.ArgumentParser(prog="python -m quant.peer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="seesaw_shuffle")
    ap.add_argument("--weights", type=Path, help="float checkpoint (default models/VARIANT.pt)")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)
    model = load_reference(args.variant, args.weights)
    res = peer_cosines(model, face_set.load("calibration"), face_set.load("evaluation"))
    print(f"torch.ao int8 vs float on {len(res['per_face'])} evaluation faces: "
          f"mean cosine {res['mean']:.5f}, min {res['min']:.5f}")
    r = res["report"]
    print(f"quantized modules: {r['module_types']}")
    print(f"int8 ops: {r['int8_ops']}")
    print(f"float ops: {r['float_ops']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(variant=args.variant, weights=str(args.weights),
                                             **res), indent=2))
    return res


if __name__ == "__main__":
    main()
