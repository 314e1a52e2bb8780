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


def test_counts_reproduce_the_reference_table():
    rows = {r["variant"]: r for r in counts.report(list(VARIANTS))}
    for name, (params, macs) in counts.REFERENCE.items():
        assert rows[name]["params"] == params, name
        assert round(rows[name]["macs"] / 1e5) == round(macs / 1e5), name
        assert rows[name]["matches_reference"]
    split = rows["seesaw_shuffle"]["macs_by_kind"]
    # DESIGN.md: pointwise 129.7 M, depthwise 9.9 M, stem 5.4 M (one decimal, truncated)
    assert abs(split["pointwise"] - 129.7e6) < 0.1e6 and abs(split["depthwise"] - 9.9e6) < 0.1e6
    assert abs(split["stem"] - 5.4e6) < 0.1e6
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
