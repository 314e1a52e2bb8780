"""The artifact: round trip, and every refusal on load names file, layer and key."""
import json
import shutil

import numpy as np
import pytest
import torch

from quant import faces as face_set
from quant.artifact import FORMAT_VERSION, ArtifactError, load, save
from quant.golden import GoldenModel
from quant.quantize import quantize_model
from quant.zoo import build, preprocess

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cal = face_set.load("calibration")
    torch.manual_seed(0)
    model = build("seesaw_shuffle")
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(preprocess(cal[:8]))
    art = quantize_model(model.eval(), cal[:2], adaround=0,
                         meta={"source": {"weights": "random", "sha256": "0" * 64}})
    out = tmp_path_factory.mktemp("art") / "a"
    save(art, out)
    return art, out


def _copy(saved, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(saved[1], dst)
    return dst


def _edit_manifest(folder, fn):
    p = folder / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def _edit_arrays(folder, fn):
    p = folder / "model.npz"
    arrays = dict(np.load(p))
    fn(arrays)
    np.savez(p, **arrays)
    # Record the new arrays' hash, as a writer would: the loader's deeper checks are tested
    # here (an unrecorded change is tests/test_cli.py's test_truncated_model_npz_is_detected).
    import json
    from quant.files import sha256
    m = folder / "manifest.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "arrays_sha256": sha256(p)}))


def test_round_trip(saved):
    art, out = saved
    back = load(out)
    assert back.variant == "seesaw_shuffle"
    assert back.program == json.loads(json.dumps(art.program))
    assert set(back.arrays) == set(art.arrays)
    for k in art.arrays:
        assert back.arrays[k].dtype == art.arrays[k].dtype
        assert np.array_equal(back.arrays[k], art.arrays[k]), k
    assert {k: v["fmt"] for k, v in back.tensors.items()} == \
        {k: v["fmt"] for k, v in art.tensors.items()}
    ev = face_set.load("evaluation")[:2]
    assert np.array_equal(GoldenModel(back).run(ev).embedding,
                          GoldenModel(art).run(ev).embedding)
    assert np.array_equal(GoldenModel(out).run(ev).embedding, GoldenModel(art).run(ev).embedding)


def test_manifest_contents(saved):
    m = json.loads((saved[1] / "manifest.json").read_text())
    assert m["format_version"] == FORMAT_VERSION
    assert m["source"]["sha256"] == "0" * 64
    assert m["rounding"]["rule"].startswith("round half up")
    assert m["input"]["fmt"]["fxp"] == "fxp-s9/8" and m["input"]["offset"] == -255
    assert m["output"]["tensor"] == "embedding"
    assert all("fxp" in t["fmt"] for t in m["tensors"].values())
    assert m["activations"] and all(s["form"] == "lut" for s in m["activations"].values())
    assert [o["op"] for o in m["program"]][:3] == ["input", "conv", "activation"]


def _expect(folder, *needles):
    with pytest.raises(ArtifactError) as e:
        load(folder)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_wrong_version(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_manifest(d, lambda m: m.update(format_version=99))
    _expect(d, "manifest.json", "format_version 99")


def test_missing_top_key(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_manifest(d, lambda m: m.pop("tensors"))
    _expect(d, "manifest.json", "missing key 'tensors'")


def test_missing_op_key(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_manifest(d, lambda m: m["program"][1].pop("multiplier"))
    _expect(d, "layer 'conv1'", "missing key 'multiplier'")


def test_unknown_op_and_dangling_input(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_manifest(d, lambda m: m["program"][2].update(op="gelu"))
    _expect(d, "layer 'conv1.act'", "unknown op 'gelu'")
    d2 = tmp_path / "c2"
    shutil.copytree(saved[1], d2)
    _edit_manifest(d2, lambda m: m["program"][2].update(inputs=["nowhere"]))
    _expect(d2, "layer 'conv1.act'", "'nowhere'")


def test_shape_mismatch(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_arrays(d, lambda a: a.update({"conv1.bias": a["conv1.bias"][:10]}))
    _expect(d, "model.npz", "'conv1.bias'", "shape")


def test_dtype_mismatch(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_arrays(d, lambda a: a.update({"conv1.weight.0": a["conv1.weight.0"].astype(np.int32)}))
    _expect(d, "model.npz", "'conv1.weight.0'", "dtype")


def test_value_outside_format(saved, tmp_path):
    d = _copy(saved, tmp_path)

    def bad(a):
        m = a["conv1.multiplier"].copy()
        m[3] = 1 << 17                         # one bit too many for the 18x18 DSP
        a["conv1.multiplier"] = m
    _edit_arrays(d, bad)
    _expect(d, "model.npz", "'conv1.multiplier'", "fxp-u17/0")


def test_missing_and_extra_arrays(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_arrays(d, lambda a: a.pop("conv2_dw.shift"))
    _expect(d, "model.npz", "missing", "conv2_dw.shift")
    d2 = tmp_path / "c2"
    shutil.copytree(saved[1], d2)
    _edit_arrays(d2, lambda a: a.update(stray=np.zeros(3, np.int8)))
    _expect(d2, "model.npz", "stray")


def test_array_reference_missing(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_manifest(d, lambda m: m["program"][1]["parts"][0].update(weight="nope"))
    _expect(d, "layer 'conv1'", "parts[0].weight", "'nope'")


def test_activation_spec_disagrees_with_tensor(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_manifest(d, lambda m: m["program"][2]["spec"]["in_fmt"].update(n_frac=1, fxp="fxp-s8/1"))
    _expect(d, "layer 'conv1.act'", "spec.in_fmt")


def test_fxp_string_must_agree(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_manifest(d, lambda m: m["tensors"]["conv1"]["fmt"].update(fxp="fxp-s8/0"))
    _expect(d, "tensor 'conv1'", "fxp")


def test_missing_files(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "model.npz").unlink()
    _expect(d, "model.npz", "missing")
    _expect(tmp_path / "nothing", "manifest.json", "missing")


def test_narrow_accumulator_refused_by_golden(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_manifest(d, lambda m: m["program"][1].update(acc_bits=4))
    with pytest.raises(ValueError, match="layer 'conv1'.*acc_bits"):
        GoldenModel(d)
