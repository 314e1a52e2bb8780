"""Loading float checkpoints, strictly.

Accepted layouts (those of the reference implementation's published checkpoints and of common
training scripts): a plain ``state_dict``; a dict holding it under ``"state_dict"``; either with
every key prefixed ``module.`` (saved from ``DataParallel``). Anything missing, unexpected or of
the wrong shape stops the load with one error listing all of it: nothing loads partially.
"""
from pathlib import Path

from .cli import UserError

import torch


class CheckpointError(UserError, ValueError):
    """A checkpoint does not fit the model; the message names the file and every bad key."""


def extract_state_dict(obj, source="checkpoint") -> dict:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: expected a state_dict (a dict of tensors), "
                              f"found {type(obj).__name__}")
    not_tensors = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise CheckpointError(f"{source}: entries that are not tensors: {', '.join(map(str, not_tensors[:10]))}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _why(path, exc) -> str:
    """A reason a person can act on, instead of torch's raw error (a text file gives
    ``KeyError(101)``: the first byte read as a pickle opcode)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if head[:2] == b"PK":
        return f"a zip archive that torch.load cannot read, truncated or corrupt: " \
               f"{str(exc).split('. ')[0]}"
    if head[:1] != b"\x80":
        return "neither a zip archive (torch.save) nor a pickle (first bytes " \
               f"{head!r})"
    return f"torch.load failed: {type(exc).__name__}: {exc}"


def load_checkpoint(model: torch.nn.Module, source) -> torch.nn.Module:
    """Load ``source`` (a path or an already loaded object) into ``model`` strictly."""
    name = str(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        if path.is_dir():
            raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_why(path, e)})") from None
    state = extract_state_dict(source, name)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (model has {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError(f"{name} does not fit {type(model).__name__}"
                              f"{' ' + model.spec.name if hasattr(model, 'spec') else ''}: "
                              + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model
