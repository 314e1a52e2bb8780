"""Float model zoo: reference semantics and key names, counts, preprocessing."""
import json

import numpy as np
import pytest
import torch

from quant import counts
from quant.zoo import VARIANTS, build, preprocess, variant
from tests import reference_impl

REFERENCE_VARIANTS = sorted(reference_impl.TABLES)


@pytest.mark.parametrize("name", REFERENCE_VARIANTS)
def test_reference_state_dict_loads_and_matches(name):
    """A state_dict laid out like the reference implementation's loads strictly, and the
    embeddings agree with an independent functional implementation to 1e-5."""
    from quant.checkpoint import load_checkpoint
    sd = reference_impl.make_state_dict(name, seed=1)
    model = load_checkpoint(build(name), sd).eval()
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x)
        ref = reference_impl.forward(name, sd, x)
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", REFERENCE_VARIANTS)
def test_key_names_are_the_reference_ones(name):
    assert set(build(name).state_dict()) == set(reference_impl.make_state_dict(name))


def _macs_from_state_dict(name, size=112):
    """MACs of a variant computed here, independently of quant.counts: every conv and linear
    weight of the reference-layout state_dict times the output size it runs at, the output
    size taken from a forward pass of the functional reference implementation."""
    sd = reference_impl.make_state_dict(name, seed=1)
    sizes = {}
    real_conv2d, real_linear = torch.nn.functional.conv2d, torch.nn.functional.linear

    def conv2d(x, w, *a, **k):
        y = real_conv2d(x, w, *a, **k)
        sizes.setdefault(w.data_ptr(), []).append(y.shape[2] * y.shape[3])
        return y

    def linear(x, w, *a, **k):
        sizes.setdefault(w.data_ptr(), []).append(1)
        return real_linear(x, w, *a, **k)

    torch.nn.functional.conv2d, torch.nn.functional.linear = conv2d, linear
    try:
        with torch.no_grad():
            reference_impl.forward(name, sd, torch.zeros(1, 3, size, size))
    finally:
        torch.nn.functional.conv2d, torch.nn.functional.linear = real_conv2d, real_linear
    # a conv weight's numel is out_c * in_c / groups * k * k: MACs per output pixel
    return sum(w.numel() * sum(sizes[w.data_ptr()]) for w in sd.values()
               if w.data_ptr() in sizes)


@pytest.mark.parametrize("name", REFERENCE_VARIANTS)
def test_counts_agree_with_an_independent_count(name):
    """quant.counts (forward hooks on the zoo model) against a count over the reference-layout
    weights run through tests/reference_impl.py; params against the state_dict."""
    row = counts.report([name])[0]
    sd = reference_impl.make_state_dict(name, seed=1)
    params = sum(v.numel() for k, v in sd.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert row["params"] == params
    assert row["macs"] == _macs_from_state_dict(name)


def test_counts_quote_the_reference_implementation():
    """The reference implementation's own figures (recorded in quant/counts.py, quoted in the
    README): every variant that has reference code matches them."""
    rows = {r["variant"]: r for r in counts.report(list(VARIANTS))}
    for name in counts.REFERENCE:
        assert rows[name]["matches_reference"], name
    assert rows["seesaw_shuffle_mobi"]["reference_params"] is None


def test_counts_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "counts.json"
    assert counts.main(["seesaw_shuffle", "--json", str(out)]) == 0
    assert "seesaw_shuffle" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["params"] == 1_370_176


def test_counts_cli_rejects_unknown_variant(capsys):
    assert counts.main(["seesaw_bogus"]) == 2
    assert "seesaw_bogus" in capsys.readouterr().err


def test_unknown_variant_names_known_ones():
    with pytest.raises(KeyError, match="seesaw_shuffle"):
        variant("resnet50")


def test_mobi_variant_follows_table_2():
    m = build("seesaw_shuffle_mobi")
    assert [len(m.conv_3.model), len(m.conv_4.model), len(m.conv_5.model)] == [2, 3, 6]


def test_preprocess_is_the_reference_normalisation():
    faces = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    x = preprocess(faces)
    assert x.shape == (2, 3, 112, 112)
    assert torch.equal(x[1, 2], (torch.from_numpy(faces[1, :, :, 2]).float() - 127.5) / 128)


@pytest.mark.parametrize("bad", [np.zeros((1, 112, 112, 3), np.float32),
                                 np.zeros((1, 3, 112, 112), np.uint8),
                                 np.zeros((1, 100, 100, 3), np.uint8)])
def test_preprocess_rejects_wrong_inputs(bad):
    with pytest.raises(ValueError, match="uint8 of shape"):
        preprocess(bad)
