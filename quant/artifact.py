"""The quantized-model artifact: what the golden model, the generator and the firmware compiler
all read.

A folder with two files:

``manifest.json``
    ``format_version``, ``variant``, ``source`` (weights file and its sha256), ``quantizer``
    settings, the ``rounding`` rule, ``input`` and ``output`` descriptions, ``tensors`` (every
    named tensor: per-image shape, role, format incl. the fxpmath dtype string), ``arrays``
    (every integer array: shape, dtype, format), ``activations`` (every activation unit spec)
    and ``program``: the ordered layer program (see docs/NUMERICS.md for each op's fields).
``model.npz``
    Every integer array named in the manifest, and nothing else.

:func:`load` checks everything it can before anyone computes with it: version, required keys
of every op, references between ops, tensors and arrays, array shape and dtype against the
manifest, and that every array value fits its declared format. Each error names the file, the
layer and the key.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import files
from .cli import UserError
from .fixedpoint import Fmt

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "model.npz"
ARRAYS_HASH = "arrays_sha256"     # sha256 of model.npz, checked on load
ROUNDING = {
    "rule": "round half up: floor(v / 2**s + 1/2), arithmetic shift",
    "saturation": "clamp to the output format's range",
    "requantize": "saturate(floor(acc * M / 2**s + 1/2)), M unsigned < 2**17",
}
INPUT = {"tensor": "input", "layout": "uint8 RGB NHWC (N, 112, 112, 3)",
         "transform": "raw = scale * pixel + offset", "normalisation": "(pixel - 127.5) / 128"}

# Fields every op of a kind must carry (beyond name, op, inputs, output), and which of them
# name arrays in model.npz.
OP_FIELDS = {
    "input": ("scale", "offset"),
    "conv": ("parts", "kernel", "stride", "padding", "depthwise", "bias", "multiplier", "shift",
             "acc_bits"),
    "linear": ("weight", "bias", "multiplier", "shift", "acc_bits"),
    "activation": ("function", "spec"),
    "shuffle": ("groups",),
    "avgpool": ("multiplier", "shift", "acc_bits"),
    "prelu": ("slope", "slope_frac"),
    "scale_channels": ("shift",),
    "add": (),
    "maxpool": ("kernel", "stride"),
}
ARRAY_FIELDS = {"conv": ("bias", "multiplier", "shift"),
                "linear": ("weight", "bias", "multiplier", "shift"), "prelu": ("slope",)}
N_INPUTS = {"input": 0, "scale_channels": 2, "add": 2}


class ArtifactError(UserError, ValueError):
    """The artifact on disk is inconsistent; the message names file, layer and key."""


@dataclass
class Artifact:
    """In-memory artifact. ``tensors[name] = {"shape": [...], "fmt": Fmt, "role": str}``;
    ``arrays[key]`` integer numpy arrays with formats ``array_fmts[key]``; ``meta`` holds
    ``source``, ``quantizer`` settings and anything else recorded."""
    variant: str
    program: list
    tensors: dict
    arrays: dict
    array_fmts: dict
    meta: dict = field(default_factory=dict)

    def fmt(self, tensor: str) -> Fmt:
        try:
            return self.tensors[tensor]["fmt"]
        except KeyError:
            raise KeyError(f"artifact {self.variant}: no tensor {tensor!r}") from None

    @property
    def input_fmt(self) -> Fmt:
        return self.fmt("input")

    @property
    def output_fmt(self) -> Fmt:
        return self.fmt(self.program[-1]["output"])

    def op(self, name: str) -> dict:
        for o in self.program:
            if o["name"] == name:
                return o
        raise KeyError(f"artifact {self.variant}: no layer {name!r}")

    def activation_specs(self) -> dict:
        from .activation import ActivationSpec
        specs = {}
        for o in self.program:
            if o["op"] == "activation":
                s = ActivationSpec.from_dict(o["spec"])
                specs[s.name] = s
        return specs

    def manifest(self) -> dict:
        meta = dict(self.meta)
        source = meta.pop("source", None)
        inp = self.program[0]
        return {
            "format_version": FORMAT_VERSION,
            "variant": self.variant,
            "source": source,
            "quantizer": meta,
            "rounding": ROUNDING,
            "input": dict(INPUT, fmt=self.input_fmt.to_dict(), scale=inp.get("scale"),
                          offset=inp.get("offset")),
            "output": {"tensor": self.program[-1]["output"], "fmt": self.output_fmt.to_dict(),
                       "note": "raw integer embedding; value = raw * 2**-n_frac; the host "
                               "L2-normalises"},
            "tensors": {k: {"shape": list(v["shape"]), "role": v["role"],
                            "fmt": v["fmt"].to_dict()} for k, v in self.tensors.items()},
            "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype),
                           "fmt": self.array_fmts[k].to_dict()} for k, a in self.arrays.items()},
            "activations": {k: s.to_dict() for k, s in self.activation_specs().items()},
            "program": self.program,
        }


def save(artifact: Artifact, out) -> Path:
    """Write ``out/manifest.json`` and ``out/model.npz``; returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for k, a in artifact.arrays.items():
        if not artifact.array_fmts[k].holds(a):
            raise ArtifactError(f"{out / ARRAYS}: array {k!r} does not fit its format "
                                f"{artifact.array_fmts[k].fxp_dtype}")
    manifest = artifact.manifest()
    # Each file is written under a temporary name and renamed (a failed run leaves the old
    # file or none); the arrays first, their hash in the manifest, the manifest last.
    with files.atomic(out / ARRAYS) as tmp:
        np.savez(tmp, **artifact.arrays)
    manifest[ARRAYS_HASH] = files.sha256(out / ARRAYS)
    files.write_text(out / MANIFEST, json.dumps(manifest, indent=1, default=_json_default) + "\n")
    # Read back through the validating loader: never leave an artifact that `load` refuses.
    load(out)
    return out


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Fmt):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _fmt(d, where):
    try:
        fmt = Fmt.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: bad format {d!r} ({e})") from None
    if isinstance(d, dict) and "fxp" in d and d["fxp"] != fmt.fxp_dtype:
        raise ArtifactError(f"{where}: fxp dtype {d['fxp']!r} disagrees with "
                            f"{fmt.fxp_dtype!r}")
    return fmt


def _need(d, key, where):
    if not isinstance(d, dict) or key not in d:
        raise ArtifactError(f"{where}: missing key {key!r}")
    return d[key]


def load(path) -> Artifact:
    """Read and validate an artifact folder (or its ``manifest.json``)."""
    path = Path(path)
    folder = path.parent if path.name == MANIFEST else path
    mpath, apath = folder / MANIFEST, folder / ARRAYS
    for p in (mpath, apath):
        if not p.exists():
            raise ArtifactError(f"{p}: missing (not a quantized-model artifact folder)")
    try:
        m = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mpath}: not valid JSON ({e})") from None
    version = _need(m, "format_version", str(mpath))
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{mpath}: format_version {version!r} is not the supported "
                            f"{FORMAT_VERSION}; re-run `python -m quant`")
    for key in ("variant", "source", "quantizer", "rounding", "input", "output", "tensors",
                "arrays", "activations", "program"):
        _need(m, key, str(mpath))

    tensors = {}
    for name, t in m["tensors"].items():
        where = f"{mpath}: tensor {name!r}"
        tensors[name] = {"shape": list(_need(t, "shape", where)), "role": _need(t, "role", where),
                         "fmt": _fmt(_need(t, "fmt", where), where + " key 'fmt'")}
    array_meta = {}
    for key, a in m["arrays"].items():
        where = f"{mpath}: array {key!r}"
        array_meta[key] = (tuple(_need(a, "shape", where)), _need(a, "dtype", where),
                           _fmt(_need(a, "fmt", where), where + " key 'fmt'"))

    recorded = m.get(ARRAYS_HASH)
    if recorded is not None and files.sha256(apath) != recorded:
        raise ArtifactError(f"{apath}: content does not match the {ARRAYS_HASH} recorded in "
                            f"{MANIFEST} (truncated or replaced); quantize again")
    try:
        npz = np.load(apath, allow_pickle=False)
        arrays = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise ArtifactError(f"{apath}: unreadable ({e})") from None
    missing = sorted(set(array_meta) - set(arrays))
    extra = sorted(set(arrays) - set(array_meta))
    if missing:
        raise ArtifactError(f"{apath}: missing array(s) {missing} declared in {MANIFEST}")
    if extra:
        raise ArtifactError(f"{apath}: array(s) {extra} not declared in {MANIFEST}")
    array_fmts = {}
    for key, (shape, dtype, fmt) in array_meta.items():
        a = arrays[key]
        if tuple(a.shape) != shape:
            raise ArtifactError(f"{apath}: array {key!r} has shape {tuple(a.shape)}, "
                                f"{MANIFEST} says {shape}")
        if str(a.dtype) != dtype:
            raise ArtifactError(f"{apath}: array {key!r} has dtype {a.dtype}, "
                                f"{MANIFEST} says {dtype}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ArtifactError(f"{apath}: array {key!r} is {a.dtype}, not an integer array")
        if not fmt.holds(a):
            raise ArtifactError(f"{apath}: array {key!r} value range [{a.min()}, {a.max()}] "
                                f"does not fit its format {fmt.fxp_dtype}")
        array_fmts[key] = fmt

    program = m["program"]
    if not isinstance(program, list) or not program:
        raise ArtifactError(f"{mpath}: key 'program' must be a non-empty list of ops")
    produced, names = set(), set()
    for i, op in enumerate(program):
        where = f"{mpath}: layer {op.get('name', f'#{i}')!r}" if isinstance(op, dict) \
            else f"{mpath}: program[{i}]"
        for key in ("name", "op", "inputs", "output"):
            _need(op, key, where)
        kind = op["op"]
        if kind not in OP_FIELDS:
            raise ArtifactError(f"{where}: key 'op': unknown op {kind!r}; known: "
                                f"{', '.join(OP_FIELDS)}")
        if op["name"] in names:
            raise ArtifactError(f"{where}: key 'name': duplicate layer name")
        names.add(op["name"])
        for key in OP_FIELDS[kind]:
            _need(op, key, where)
        n_in = N_INPUTS.get(kind, 1)
        if len(op["inputs"]) != n_in:
            raise ArtifactError(f"{where}: key 'inputs': {kind} takes {n_in} input(s), "
                                f"not {len(op['inputs'])}")
        for t in op["inputs"]:
            if t not in produced:
                raise ArtifactError(f"{where}: key 'inputs': tensor {t!r} is not produced by an "
                                    f"earlier layer")
        if op["output"] not in tensors:
            raise ArtifactError(f"{where}: key 'output': tensor {op['output']!r} missing from "
                                f"'tensors'")
        produced.add(op["output"])
        refs = [(k, op[k]) for k in ARRAY_FIELDS.get(kind, ())]
        if kind == "conv":
            for j, part in enumerate(op["parts"]):
                for key in ("in", "out", "weight"):
                    _need(part, key, f"{where} key 'parts'[{j}]")
                refs.append((f"parts[{j}].weight", part["weight"]))
        for k, ref in refs:
            if ref not in arrays:
                raise ArtifactError(f"{where}: key {k!r}: array {ref!r} missing from {ARRAYS}")
        tied = {"add": op["inputs"], "scale_channels": op["inputs"][:1]}.get(
            kind, op["inputs"] if kind in ("shuffle", "maxpool", "prelu") else [])
        if any(tensors[t]["fmt"].offset for t in op["inputs"]) and kind != "activation":
            raise ArtifactError(f"{where}: key 'inputs': a tensor with an offset (key "
                                f"'fmt.offset') may feed only an activation")
        if tied and len({tensors[t]["fmt"].scale for t in [*tied, op["output"]]}) > 1:
            raise ArtifactError(f"{where}: tensors {[*tied, op['output']]} must share one scale "
                                f"mantissa (key 'fmt.scale'), not "
                                f"{[tensors[t]['fmt'].scale for t in [*tied, op['output']]]}")
        if kind == "activation":
            from .activation import ActivationSpec
            try:
                spec = ActivationSpec.from_dict(op["spec"])
            except ValueError as e:
                raise ArtifactError(f"{where}: key 'spec': {e}") from None
            for k, t in (("in_fmt", op["inputs"][0]), ("out_fmt", op["output"])):
                if getattr(spec, k) != tensors[t]["fmt"]:
                    raise ArtifactError(f"{where}: key 'spec.{k}' {getattr(spec, k).fxp_dtype} "
                                        f"disagrees with tensor {t!r} "
                                        f"{tensors[t]['fmt'].fxp_dtype}")
    if program[0]["op"] != "input":
        raise ArtifactError(f"{mpath}: program[0] must be the 'input' op, not "
                            f"{program[0]['op']!r}")
    meta = dict(m["quantizer"])
    meta["source"] = m["source"]
    return Artifact(variant=m["variant"], program=program, tensors=tensors, arrays=arrays,
                    array_fmts=array_fmts, meta=meta)
