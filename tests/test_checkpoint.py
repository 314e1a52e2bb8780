"""Strict checkpoint loading: the layouts that published checkpoints use, and every error."""
import pytest
import torch

from quant.checkpoint import CheckpointError, load_checkpoint
from quant.zoo import build


@pytest.fixture(scope="module")
def state():
    return build("seesaw_share").state_dict()


@pytest.mark.parametrize("wrap", ["plain", "nested", "module", "nested_module"])
def test_accepted_layouts(tmp_path, state, wrap):
    sd = {k: v.clone() + (1 if v.is_floating_point() else 0) for k, v in state.items()}
    if "module" in wrap:
        sd = {"module." + k: v for k, v in sd.items()}
    obj = {"state_dict": sd, "epoch": 3} if "nested" in wrap else sd
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = load_checkpoint(build("seesaw_share"), path)
    assert torch.equal(model.conv1.conv.weight, state["conv1.conv.weight"] + 1)


def test_all_bad_keys_reported_at_once(state):
    sd = dict(state)
    del sd["conv_23.conv_1.conv.weight"]
    sd["conv_23.extra.weight"] = torch.zeros(1)
    sd["linear.weight"] = torch.zeros(10, 512)
    model = build("seesaw_share")
    before = model.conv1.conv.weight.clone()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(model, {k: v + 1 if k == "conv1.conv.weight" else v for k, v in sd.items()})
    msg = str(e.value)
    assert "missing: conv_23.conv_1.conv.weight" in msg
    assert "unexpected: conv_23.extra.weight" in msg
    assert "linear.weight (10, 512) (model has (512, 512))" in msg
    assert torch.equal(model.conv1.conv.weight, before), "nothing may load partially"


def test_variant_mismatch_is_named(state):
    with pytest.raises(CheckpointError, match="seesaw_shuffle_mobi"):
        load_checkpoint(build("seesaw_shuffle_mobi"), state)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(build("seesaw_share"), bad)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(build("seesaw_share"), tmp_path / "nowhere.pt")


def test_non_tensor_entries_rejected():
    with pytest.raises(CheckpointError, match="not tensors: conv1.conv.weight"):
        load_checkpoint(build("seesaw_share"), {"conv1.conv.weight": [1, 2, 3]})
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_checkpoint(build("seesaw_share"), [1, 2])
