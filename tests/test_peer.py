"""The torch.ao int8 peer.

Random weights make this network chaotic (a small perturbation of an early activation grows
through the 15 blocks), so int8 tracks float only loosely on them: measured cosine about 0.55
on seesaw_shuffle with random weights and face-calibrated BatchNorm, versus 0.989 (mean, 51
evaluation faces) with the partially trained reference weights. The random-weight tests therefore check the mechanics
(real int8 kernels, finite normalised embeddings, a loose cosine bound); fidelity is checked
on the reference weights when they exist.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from quant import faces as face_set
from quant.peer import peer_cosines, torch_ao_embedder, torch_ao_embeddings, torch_ao_quantize
from quant.zoo import SeesawFaceNet, build, preprocess, variant

MODELS = Path(__file__).resolve().parent.parent / "models"


def _random(net):
    """Random weights; BatchNorm statistics from 8 faces so activations have face-like scales
    (default statistics make random nets degenerate)."""
    net.train()
    for mod in net.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.momentum = None                               # cumulative average
    with torch.no_grad():
        net(preprocess(face_set.load("calibration")[:8]))
    return net.eval()


def _counts(model):
    return (sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()),
            sum(isinstance(m, torch.nn.Linear) for m in model.modules()))


@pytest.fixture(scope="module")
def faces():
    return face_set.load("calibration")[:4], face_set.load("evaluation")[:3]


def test_torch_ao_mini_network_runs_int8(faces):
    """Fast: the seesaw_shuffle skeleton without residual stages (3 down blocks)."""
    torch.manual_seed(0)
    model = _random(SeesawFaceNet(replace(variant("seesaw_shuffle"), depths=(0, 0, 0))))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cal, ev = faces
    embed = torch_ao_embedder(model, cal[:2])
    emb = embed(ev[:2])
    for k, v in model.state_dict().items():                   # the float model is untouched
        assert torch.equal(v, before[k]), k
    assert emb.shape == (2, 512) and emb.dtype == np.float32 and np.all(np.isfinite(emb))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    report = embed.converted.quantization_report
    convs, linears = _counts(model)
    assert report["module_types"]["Conv2d"] == convs
    assert report["module_types"]["Linear"] == linears
    assert set(report["float_ops"]) <= {"getitem", "flatten"}
    with torch.no_grad():
        f = model(preprocess(ev[:2])).numpy()
    cos = np.sum(emb * f, axis=1)
    assert np.all(cos > 0.5) and np.all(cos < 0.99999)         # close, but really quantized


def test_torch_ao_rejects_bad_faces():
    model = build("seesaw_shuffle").eval()
    cal = face_set.load("calibration")[:2]
    with pytest.raises(ValueError, match="calibration faces must be uint8"):
        torch_ao_quantize(model, cal.astype(np.float32))
    with pytest.raises(ValueError, match="calibration faces"):
        torch_ao_quantize(model, cal[:0])


@pytest.mark.slow
def test_torch_ao_peer_seesaw_shuffle_random_weights(faces):
    torch.manual_seed(0)
    model = _random(build("seesaw_shuffle"))
    cal, ev = faces
    res = peer_cosines(model, cal, ev)
    report = res["report"]
    convs, linears = _counts(model)
    assert report["module_types"]["Conv2d"] == convs == 79     # every conv is int8
    assert report["module_types"]["Linear"] == linears == 31
    assert report["int8_ops"]["mul"] == 63                     # 48 swish + 15 SE scalings
    assert report["int8_ops"]["add"] == 12                     # residual adds
    assert set(report["float_ops"]) <= {"getitem", "flatten"}  # documented float leftovers
    cos = np.array(res["per_face"])
    assert cos.shape == (3,) and np.all(np.isfinite(cos))
    assert res["mean"] > 0.4 and res["min"] < 0.99999


@pytest.mark.slow
def test_torch_ao_peer_fidelity_on_reference_weights():
    weights = next((p for p in (MODELS / "seesaw_shuffle.pt", MODELS / "seesaw_shuffle.partial.pt")
                    if p.exists()), None)
    if weights is None:
        pytest.skip("no reference weights in models/ yet")
    from quant.reference_model import load_reference
    model = load_reference("seesaw_shuffle", weights)
    ev = face_set.load("evaluation")[:8]
    emb = torch_ao_embeddings(model, face_set.load("calibration")[:16], ev)
    with torch.no_grad():
        f = model(preprocess(ev)).numpy()
    cos = np.sum(emb * f, axis=1)
    assert emb.shape == (8, 512) and cos.mean() > 0.98 and cos.min() > 0.95
