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


def load_checkpoint(model: torch.nn.Module, source) -> torch.nn.Module:
    """Load ``source`` (a path or an already loaded object) into ``model`` strictly."""
    name = str(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
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
