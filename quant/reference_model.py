"""The shipped reference model: deterministic weights that behave like a face model.

Random weights do not: with calibrated BatchNorm they either blow a 1-LSB input change up or
map every face to nearly one embedding. The reference weights are trained here, on this CPU,
by instance discrimination: every training image is its own class, seen under strong
augmentation (random crop and scale, flip, brightness and contrast, grey, blur, pixel noise),
with a normalised-softmax (CosFace) head. The training images are the *calibration* faces plus
non-face patches (scikit-image's LFW non-faces and crops of its other pictures); the evaluation
faces are never seen.

These weights are NOT trained for verification accuracy (that needs MS1MV2 and a GPU); they
exist so that quantization and hardware fidelity are measured on a network with realistic
activation statistics. Use a real checkpoint with ``--weights`` for accuracy work.

    python -m quant.reference_model train [--variant seesaw_shuffle] [--steps 600]
    python -m quant.reference_model check [--variant seesaw_shuffle]

``check`` measures, on the held-out evaluation faces: mean cosine between a face's embedding and
that of the face plus uniform +-1 LSB noise (smoothness, accept >= 0.995), and mean pairwise
cosine between different faces (spread, accept <= 0.5); it writes ``build/reference_check.json``.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import cli, files
from . import faces as face_set
from .checkpoint import load_checkpoint
from .zoo import VARIANTS, build, preprocess

MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
SMOOTHNESS_MIN = 0.995
SPREAD_MAX = 0.5


def weights_path(variant: str) -> Path:
    return MODEL_DIR / f"{variant}.pt"


def load_reference(variant: str = "seesaw_shuffle", weights=None):
    """The float model with shipped (or given) weights, in eval mode."""
    path = Path(weights) if weights else weights_path(variant)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no weights; train them with `python -m quant.reference_model train "
            f"--variant {variant}` or pass a checkpoint")
    model = build(variant)
    load_checkpoint(model, path)
    return model.eval()


def training_images(seed=0) -> np.ndarray:
    """Calibration faces, LFW non-faces and crops of scikit-image's other pictures, 112x112."""
    from skimage import data
    from skimage.transform import resize
    rng = np.random.default_rng(seed)
    cal = face_set.load("calibration")
    nonfaces = np.stack([face_set.grey_to_rgb112(f) for f in data.lfw_subset()[100:]])
    pictures = [data.camera(), data.coffee(), data.chelsea(), data.rocket(),
                data.immunohistochemistry(), data.horse(), data.moon(), data.coins(),
                data.clock(), data.grass(), data.gravel(), data.brick(), data.colorwheel(),
                data.hubble_deep_field(), data.retina()]
    crops = []
    for pic in pictures:
        pic = np.asarray(pic, dtype=np.float64)
        pic = pic * 255 if pic.max() <= 1 else pic
        if pic.ndim == 2:
            pic = np.repeat(pic[..., None], 3, axis=2)
        pic = pic[..., :3]
        for _ in range(16):
            side = int(rng.integers(64, min(pic.shape[:2]) + 1))
            r = int(rng.integers(0, pic.shape[0] - side + 1))
            c = int(rng.integers(0, pic.shape[1] - side + 1))
            crop = resize(pic[r:r + side, c:c + side], (112, 112), order=1, anti_aliasing=True,
                          preserve_range=True)
            crops.append(np.clip(np.rint(crop), 0, 255).astype(np.uint8))
    return np.concatenate([cal, nonfaces, np.stack(crops)])


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Strong augmentation of a float batch in [0, 255], NCHW, returns the same range."""
    n = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=gen)
    scale = 0.65 + 0.35 * u(n)
    angle = (u(n) - 0.5) * 0.35
    flip = torch.where(u(n) < 0.5, -1.0, 1.0)
    tx, ty = (u(n) - 0.5) * 2 * (1 - scale), (u(n) - 0.5) * 2 * (1 - scale)
    theta = torch.stack([
        torch.stack([scale * torch.cos(angle) * flip, -scale * torch.sin(angle), tx], 1),
        torch.stack([scale * torch.sin(angle) * flip, scale * torch.cos(angle), ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    grey = x.mean(1, keepdim=True).expand_as(x)
    x = torch.where((u(n) < 0.5).view(n, 1, 1, 1), grey, x)
    blur = u(n) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0]) / 4
        k2 = (k[:, None] * k[None]).expand(3, 1, 3, 3)
        x = torch.where(blur.view(n, 1, 1, 1), F.conv2d(F.pad(x, (1,) * 4, mode="replicate"),
                                                        k2, groups=3), x)
    contrast = 0.6 + 0.8 * u(n, 1, 1, 1)
    bright = (u(n, 1, 1, 1) - 0.5) * 80
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + bright
    sigma = u(n, 1, 1, 1) * 4
    x = x + sigma * torch.randn(x.shape, generator=gen) + (u(*x.shape) - 0.5) * 2
    return x.clamp(0, 255).round()


def learning_rate(step: int, steps: int) -> float:
    """SGD learning rate of step ``step`` (from 0) of ``steps``: cosine from 0.1 to 0."""
    return 0.1 * 0.5 * (1 + math.cos(math.pi * step / steps))


def train(variant: str, steps: int, seed: int = 0, batch: int = 64, log=print,
          snapshot=None) -> dict:
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(variant, steps, seed, batch, log, snapshot)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(variant, steps, seed, batch, log, snapshot):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(training_images(seed)).permute(0, 3, 1, 2).float()
    classes = images.shape[0]
    model = build(variant)
    head = torch.nn.Parameter(torch.randn(classes, model.spec.embedding, generator=gen) * 0.01)
    params = list(model.parameters()) + [head]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    s, m = 24.0, 0.2
    log(f"training {variant} on {classes} instances, {steps} steps of {batch}")
    t0 = time.time()
    model.train()
    for step in range(steps):
        lr = learning_rate(step, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, classes, (batch,), generator=gen)
        x = (augment(images[idx], gen) - 127.5) / 128
        emb = F.normalize(model(x, normalize=False), dim=1)
        logits = emb @ F.normalize(head, dim=1).t()
        logits = s * (logits - m * F.one_hot(idx, classes))
        loss = F.cross_entropy(logits, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"[{step + 1}/{steps}] loss {loss.item():.3f} lr {lr:.4f} "
                f"{time.time() - t0:.0f}s")
        if snapshot and (step + 1) % 100 == 0:
            with files.atomic(snapshot) as tmp:
                torch.save(model.state_dict(), tmp)
    model.eval()
    return {"model": model, "steps": steps, "seconds": time.time() - t0, "classes": classes}


@torch.no_grad()
def check(model, faces=None, seed=0) -> dict:
    """Smoothness (+-1 LSB noise) and spread (pairwise cosine) on held-out faces."""
    faces = face_set.load("evaluation") if faces is None else faces
    rng = np.random.default_rng(seed)
    noisy = np.clip(faces.astype(np.int16) + rng.integers(-1, 2, faces.shape), 0, 255)
    a = model(preprocess(faces))
    b = model(preprocess(noisy.astype(np.uint8)))
    smooth = (a * b).sum(1)
    pair = a @ a.t()
    off = pair[~torch.eye(len(a), dtype=torch.bool)]
    result = {"faces": len(faces), "noise_cosine_mean": smooth.mean().item(),
              "noise_cosine_min": smooth.min().item(), "pairwise_cosine_mean": off.mean().item(),
              "pairwise_cosine_max": off.max().item()}
    result["accepted"] = (result["noise_cosine_mean"] >= SMOOTHNESS_MIN
                          and result["pairwise_cosine_mean"] <= SPREAD_MAX)
    return result


def main(argv=None):
    return cli.run(_main, argv, prog="python -m quant.reference_model")


def _main(argv):
    ap = cli.ArgumentParser(prog="python -m quant.reference_model", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train reference weights into models/VARIANT.pt")
    t.add_argument("--variant", default="seesaw_shuffle", type=cli.variant)
    t.add_argument("--steps", type=cli.count, default=600,
                   help="SGD steps of 64 augmented images (default %(default)s)")
    t.add_argument("--seed", type=cli.non_negative, default=0)
    t.add_argument("--out", type=Path, help="default: models/VARIANT.pt")
    c = sub.add_parser("check", help="measure smoothness and spread on the evaluation faces")
    c.add_argument("--variant", default="seesaw_shuffle", type=cli.variant)
    c.add_argument("--weights", type=Path, help="default: models/VARIANT.pt")
    c.add_argument("--json", type=Path, default=Path("build/reference_check.json"))
    args = ap.parse_args(argv)
    if args.cmd == "check" and args.weights is not None and not args.weights.is_file():
        raise cli.UserError(f"--weights {args.weights}", "no such file")
    if args.cmd == "train":
        # One thread: the result does not depend on how reductions split across threads, and
        # a busy machine does not stall a thread team (measured: 2 threads under load ran at
        # a third of the speed of 1).
        torch.set_num_threads(1)
        import functools
        log = functools.partial(print, flush=True)
        out = args.out or weights_path(args.variant)
        result = train(args.variant, args.steps, args.seed, log=log,
                       snapshot=out.with_suffix(".partial.pt"))
        with files.atomic(out) as tmp:
            torch.save(result["model"].state_dict(), tmp)
        print(f"wrote {out} ({result['steps']} steps, {result['seconds']:.0f} s)")
        model = result["model"]
    else:
        model = load_reference(args.variant, args.weights)
    r = check(model)
    r["variant"] = args.variant
    print(f"{args.variant}: +-1 LSB noise cosine mean {r['noise_cosine_mean']:.5f} "
          f"(min {r['noise_cosine_min']:.5f}, accept >= {SMOOTHNESS_MIN}); pairwise cosine mean "
          f"{r['pairwise_cosine_mean']:.4f} (max {r['pairwise_cosine_max']:.4f}, accept <= "
          f"{SPREAD_MAX}): {'ACCEPTED' if r['accepted'] else 'REJECTED'}")
    if args.cmd == "check":
        files.write_text(args.json, json.dumps(r, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if r["accepted"] else 1


if __name__ == "__main__":
    sys.exit(main())
