"""The integer golden model: every op against an independent computation, the fast exact paths
against quant.ops bit for bit, and whole networks against their float models."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quant import activation as act
from quant import faces as face_set
from quant import ops
from quant.fixedpoint import Fmt
from quant.golden import GoldenModel, depthwise_conv
from quant.quantize import quantize_model
from quant.reference_model import MODEL_DIR
from quant.zoo import VARIANTS, build, preprocess

torch.set_num_threads(2)


def calibrated_random_model(variant, faces, seed=0):
    """Random weights, BatchNorm statistics measured on ``faces`` (a sane float network)."""
    torch.manual_seed(seed)
    model = build(variant)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.momentum = None                      # cumulative average over the batches
    model.train()
    with torch.no_grad():
        model(preprocess(faces))
    return model.eval()


def cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def faces():
    return face_set.load("calibration"), face_set.load("evaluation")


# --- single ops against independent integer / float computations ------------------------------

def test_requantize_is_round_half_up_of_exact_rational():
    rng = np.random.default_rng(1)
    acc = rng.integers(-2 ** 30, 2 ** 30, 4000)
    acc[:8] = [0, 1, -1, 3, -3, 2 ** 20, -2 ** 20, 5]
    m = rng.integers(1 << 16, 1 << 17, 4000)
    s = rng.integers(1, 40, 4000)
    out = Fmt(True, 8, 0)
    # one "channel" per value: per-channel M and s run along dimension 1
    got = ops.requantize(torch.tensor(acc, dtype=torch.float64).view(1, -1),
                         torch.tensor(m), torch.tensor(s), out)
    # Python integers: exact, independent of float64
    want = [max(out.lo, min(out.hi, (int(a) * int(mm) + (1 << (int(ss) - 1))) >> int(ss)))
            for a, mm, ss in zip(acc, m, s)]
    assert np.array_equal(got.numpy()[0].astype(np.int64), np.array(want))


def test_requantize_ties_round_up():
    out = Fmt(True, 8, 0)
    acc = torch.tensor([[1.0, -1.0, 3.0, -3.0]])
    y = ops.requantize(acc, 1, 1, out)              # 0.5, -0.5, 1.5, -1.5
    assert y.tolist() == [[1.0, 0.0, 2.0, -1.0]]


def _fast_model_for(op, arrays, tensors, variant="t"):
    from quant.artifact import Artifact
    return GoldenModel(Artifact(variant, [{"name": "input", "op": "input", "inputs": [],
                                           "output": "input", "scale": 2, "offset": -255}, op],
                                tensors, arrays, {k: Fmt(True, 40, 0) for k in arrays}, {}))


def test_fast_requantize_equals_ops(faces):
    rng = np.random.default_rng(2)
    c = 16
    acc = torch.from_numpy(rng.integers(-2 ** 34, 2 ** 34, (4, c, 5, 5)).astype(np.float64))
    acc[0, 0, 0, :4] = torch.tensor([2.0 ** 19, -2.0 ** 19, 3 * 2.0 ** 18, -3 * 2.0 ** 18])
    m = rng.integers(1 << 16, 1 << 17, c)
    s = rng.integers(1, 30, c)
    s[0] = 20
    m[0] = 1 << 16                                  # exact ties for the first values
    out = Fmt(True, 16, 0)
    op = {"name": "l", "op": "conv", "inputs": ["input"], "output": "y", "multiplier": "m",
          "shift": "s", "acc_bits": 36, "bias": "b",
          "parts": [{"in": [0, 3], "out": [0, c], "weight": "w"}], "kernel": 1, "stride": 1,
          "padding": 0, "depthwise": False}
    gm = _fast_model_for(op, {"m": m, "s": s, "b": np.zeros(c, np.int64),
                              "w": np.zeros((c, 3, 1, 1), np.int8)},
                         {"input": {"shape": [3, 112, 112], "fmt": Fmt(True, 9, 8),
                                    "role": "input"},
                          "y": {"shape": [c, 5, 5], "fmt": out, "role": "act"}})
    gm._rate["l"] = torch.from_numpy(m * np.exp2(-s.astype(np.float64)))
    fast = gm._requantize(op, acc.clone(), out)
    assert torch.equal(fast, ops.requantize(acc, torch.tensor(m), torch.tensor(s), out))


@pytest.mark.parametrize("stride,kernel,padding", [(1, 3, 1), (2, 3, 1), (1, 7, 0)])
def test_depthwise_paths_equal_ops_conv(stride, kernel, padding):
    """The slice-based float64 depthwise and the float32 library path (used when the
    accumulator bound is below 2**24) both equal ops.conv at worst-case magnitudes."""
    rng = np.random.default_rng(3)
    c = 32
    x = torch.from_numpy(rng.choice([-128, 127, -127, 5], (2, c, 9, 9)).astype(np.float64))
    w = torch.from_numpy(rng.choice([-127, 127, 3], (c, 1, kernel, kernel)).astype(np.float64))
    ref = ops.conv(x, w, None, stride, padding, groups=c)
    assert torch.equal(depthwise_conv(x, w, stride, padding), ref)
    assert torch.equal(F.conv2d(x.float(), w.float(), None, stride, padding, 1, c).double(), ref)
    assert ref.abs().max() > 2 ** 16                # the test reaches large sums


def test_float32_pointwise_and_stem_exact():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.choice([-128, 127], (2, 384, 7, 7)).astype(np.float64))
    w = torch.from_numpy(rng.choice([-127, 127], (96, 384, 1, 1)).astype(np.float64))
    assert torch.equal(F.conv2d(x.float(), w.float()).double(), ops.conv(x, w))
    xs = torch.from_numpy(rng.choice([-255, 255, 1], (2, 3, 112, 112)).astype(np.float64))
    ws = torch.from_numpy(rng.integers(-127, 128, (64, 3, 3, 3)).astype(np.float64))
    assert torch.equal(F.conv2d(xs.float(), ws.float(), None, 2, 1).double(),
                       ops.conv(xs, ws, None, 2, 1))


@pytest.mark.parametrize("form", ["lut", "cordic"])
def test_activation_gather_equals_apply(form):
    spec = act.ActivationSpec("swish", form, Fmt(True, 8, 4), Fmt(True, 8, 4))
    x = torch.arange(-128, 128, dtype=torch.float64).view(2, 8, 4, 4)
    table = torch.from_numpy(act.table(spec).astype(np.float64))
    assert torch.equal(table[x.sub(spec.in_fmt.lo).long()], act.apply(spec, x))


def test_ops_against_float_within_bounds():
    rng = np.random.default_rng(5)
    # residual add: one rounding to the output format -> at most half an output LSB
    a = torch.from_numpy(rng.integers(-2 ** 15, 2 ** 15, 1000).astype(np.float64))
    b = torch.from_numpy(rng.integers(-128, 128, 1000).astype(np.float64))
    out = Fmt(True, 16, 9)
    y = ops.add(a, 11, b, 4, out)
    exact = a.numpy() * 2.0 ** -11 + b.numpy() * 2.0 ** -4
    inside = (exact > out.lo * out.lsb) & (exact < out.hi * out.lsb)
    assert inside.mean() > 0.9
    err = np.abs(out.value(y.numpy()) - exact)[inside]
    assert err.max() <= 0.5 * out.lsb + 1e-15
    # PReLU: negative side rounded once
    x = torch.from_numpy(rng.integers(-128, 128, (1, 4)).astype(np.float64)).repeat(250, 1)
    slope = torch.tensor([32.0, -7.0, 0.0, 127.0])
    y = ops.prelu(x, slope, 7).numpy()
    ref = np.where(x.numpy() >= 0, x.numpy(), x.numpy() * slope.numpy() / 128)
    assert np.abs(y - ref).max() <= 0.5
    # SE channel scale
    x = torch.from_numpy(rng.integers(-128, 128, (3, 5, 4, 4)).astype(np.float64))
    g = torch.from_numpy(rng.integers(0, 256, (3, 5)).astype(np.float64))
    y = ops.scale_channels(x, g, 8, Fmt(True, 8, 0)).numpy()
    assert np.abs(y - x.numpy() * g.numpy()[..., None, None] / 256).max() <= 0.5


def test_golden_conv_layer_within_bound(faces):
    """A whole requantized layer (stem) against float64 arithmetic on the integer weights: the
    only errors are the multiplier's 17-bit rounding and the final half-LSB rounding."""
    cal, ev = faces
    model = calibrated_random_model("seesaw_shuffle", cal[:8])
    art = quantize_model(model, cal[:4], adaround=0)
    gm = GoldenModel(art)
    r = gm.run(ev[:2], stop_after="conv1.pre")
    op = art.op("conv1")
    out = art.fmt("conv1.pre")
    x = (torch.from_numpy(ev[:2]).permute(0, 3, 1, 2).double() * 2 - 255) / 256  # exact input
    w = torch.from_numpy(art.arrays["conv1.weight.0"].astype(np.float64))
    m = art.arrays["conv1.multiplier"].astype(np.float64)
    s = art.arrays["conv1.shift"].astype(np.float64)
    acc = F.conv2d(x * 256, w, None, 2, 1).numpy() + art.arrays["conv1.bias"][None, :, None, None]
    real = acc * (m * 2.0 ** -s)[None, :, None, None]       # in output LSBs
    inside = (real > out.lo) & (real < out.hi)
    assert np.abs(r.tensors["conv1.pre"] - real)[inside].max() <= 0.5
    assert np.all(r.tensors["conv1.pre"][~inside & (real >= out.hi)] == out.hi)


# --- whole networks ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_runs_and_is_sane(variant, faces):
    """Random weights with calibrated BatchNorm make a chaotic network (the reference model's
    reason for existing): the integer error grows layer by layer, so "sane" here means that the
    integer network tracks the float one closely early on and stays clearly correlated at the
    end (random 512-d vectors have cosine 0 +- 0.05), with nothing saturating wholesale (the embedding format comes from 3 calibration faces)."""
    from quant.quantize import float_program, run_float
    cal, ev = faces
    model = calibrated_random_model(variant, cal[:8])
    art = quantize_model(model, cal[:3], adaround=0)
    r = GoldenModel(art).run(ev[:2], keep=True)
    assert r.embedding.shape == (2, 512) and r.embedding.dtype == np.int64
    assert r.fmt.holds(r.embedding)
    ops_, params, _ = float_program(model)
    fl = run_float(ops_, params, ev[:2])
    first_block = "conv_23"
    assert cosine(art.fmt(first_block).value(r.tensors[first_block]),
                  fl[first_block].numpy()).min() > 0.95
    c = cosine(r.embedding_value(), fl["embedding"].numpy())
    assert c.min() > 0.3
    saturated = np.mean((r.embedding == r.fmt.lo) | (r.embedding == r.fmt.hi))
    assert saturated < 0.25


def _reference_weights():
    for name in ("seesaw_shuffle.pt", "seesaw_shuffle.partial.pt"):
        if (MODEL_DIR / name).exists():
            return MODEL_DIR / name
    pytest.skip("no seesaw_shuffle reference weights in models/")


def test_readme_acceptance_on_the_evaluation_faces(faces, seesaw_shuffle_artifact):
    """The README's acceptance figures, on the faces it names: the shipped weights quantized
    with all 50 calibration faces (the session's artifact, what ``make quantize`` builds), the
    integer embedding of each of the 51 evaluation faces against the float one: mean cosine
    >= 0.995, min >= 0.98 (measured 0.99766 / 0.98989, reports/quant_seesaw_shuffle.json)."""
    from quant.artifact import load
    from quant.reference_model import load_reference
    cal, ev = faces
    assert len(cal) == 50 and len(ev) == 51
    model = load_reference("seesaw_shuffle", _reference_weights())
    with torch.no_grad():
        f = model(preprocess(ev), normalize=False).numpy()
    c = cosine(GoldenModel(load(seesaw_shuffle_artifact)).run(ev).embedding_value(), f)
    assert c.mean() >= 0.995 and c.min() >= 0.98, (c.mean(), c.min())


def test_keep_returns_every_tensor_in_its_format(faces):
    cal, ev = faces
    art = quantize_model(calibrated_random_model("seesaw_share", cal[:8]), cal[:3], adaround=0)
    r = GoldenModel(art).run(ev[:2], keep=True)
    assert set(r.tensors) == set(art.tensors)
    for name, q in r.tensors.items():
        assert q.shape[1:] == tuple(art.tensors[name]["shape"]), name
        assert art.fmt(name).holds(q), name
    assert np.array_equal(r.tensors["embedding"], r.embedding)


def test_bad_faces_named():
    from quant.artifact import Artifact
    art = Artifact("t", [{"name": "input", "op": "input", "inputs": [], "output": "input",
                          "scale": 2, "offset": -255}],
                   {"input": {"shape": [3, 112, 112], "fmt": Fmt(True, 9, 8), "role": "input"}},
                   {}, {}, {})
    with pytest.raises(ValueError, match="uint8"):
        GoldenModel(art).run(np.zeros((1, 112, 112, 3), np.float32))
