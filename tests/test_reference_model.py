"""The shipped reference weights behave like a face model (issue acceptance), and the
training recipe runs."""
import json

import numpy as np
import pytest
import torch

from quant import reference_model as rm
from quant.checkpoint import CheckpointError


def test_shipped_weights_meet_acceptance():
    model = rm.load_reference("seesaw_shuffle")
    r = rm.check(model)
    assert r["noise_cosine_mean"] >= rm.SMOOTHNESS_MIN, r
    assert r["pairwise_cosine_mean"] <= rm.SPREAD_MAX, r
    assert r["accepted"]


def test_check_rejects_a_collapsed_model():
    """The spread criterion can fail: a model whose output ignores the input collapses."""
    model = rm.build("seesaw_shuffle").eval()
    with torch.no_grad():
        model.linear.weight.zero_()
        model.bn.bias.fill_(1.0)
    r = rm.check(model, rm.face_set.load("evaluation")[:6])
    assert r["pairwise_cosine_mean"] > 0.99 and not r["accepted"]


def test_training_recipe_is_deterministic():
    a = rm.train("seesaw_shuffle", steps=2, batch=4, log=lambda *_: None)["model"]
    b = rm.train("seesaw_shuffle", steps=2, batch=4, log=lambda *_: None)["model"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_check_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert rm.main(["check", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["accepted"] is True
    assert "ACCEPTED" in capsys.readouterr().out


def test_missing_or_wrong_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        rm.load_reference("seesaw_shuffle", tmp_path / "nothing.pt")
    torch.save(rm.build("seesaw_share").state_dict(), tmp_path / "share.pt")
    rm.load_reference("seesaw_share", tmp_path / "share.pt")
    torch.save({"conv1.conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        rm.load_reference("seesaw_shuffle", tmp_path / "bad.pt")
