"""The torch.ao int8 peer.

Random weights make this network chaotic (a small perturbation of an early activation grows
through the 15 blocks), so int8 tracks float only loosely on them: measured cosine about 0.55
on seesaw_shuffle with random weights and face-calibrated BatchNorm. The random-weight tests
therefore check the mechanics (real int8 kernels, finite normalised embeddings, a loose cosine
bound). On the shipped weights the peer is compared with our quantizer face by face (the
fidelity report's "accept: >= peer").
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
def test_torch_ao_peer_against_ours_on_the_shipped_weights(seesaw_shuffle_artifact):
    """The fidelity report's setting: 50 calibration faces, the 51 evaluation faces, the
    shipped weights (models/seesaw_shuffle.pt).

    Measured (reports/quant_seesaw_shuffle.json): the peer's cosine vs float is 0.874 mean,
    0.747 min; ours 0.99766 / 0.98989. (An earlier version of this test required the peer to
    exceed 0.98: that was measured on earlier, partially trained weights; on the shipped ones
    per-tensor int8 swish outputs and a per-tensor int8 embedding lose far more.) The bar:
    ours beats the peer on every face, and the peer is a working int8 network -- its mean
    lies in 0.80..0.95 (a broken conversion falls far below, an unquantized one reaches
    0.9999)."""
    from quant.artifact import load
    from quant.golden import GoldenModel
    from quant.reference_model import load_reference
    model = load_reference("seesaw_shuffle", MODELS / "seesaw_shuffle.pt")
    cal, ev = face_set.load("calibration"), face_set.load("evaluation")
    assert len(cal) == 50 and len(ev) == 51
    peer = torch_ao_embeddings(model, cal, ev)
    with torch.no_grad():
        f = model(preprocess(ev)).double().numpy()
    peer_cos = np.sum(peer * f, axis=1) / np.linalg.norm(peer, axis=1)
    ours = GoldenModel(load(seesaw_shuffle_artifact)).run(ev).embedding_value()
    ours_cos = np.sum(ours * f, axis=1) / np.linalg.norm(ours, axis=1)
    print(f"peer {peer_cos.mean():.5f} / {peer_cos.min():.5f}, "
          f"ours {ours_cos.mean():.5f} / {ours_cos.min():.5f}")
    assert 0.80 <= peer_cos.mean() <= 0.95, peer_cos.mean()
    worse = np.flatnonzero(ours_cos <= peer_cos)
    assert worse.size == 0, f"faces {worse.tolist()}: ours {ours_cos[worse]} <= peer " \
                            f"{peer_cos[worse]}"
