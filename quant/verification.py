"""Face-verification evaluation with the insightface protocol.

The public verification sets (LFW, CFP-FP, AgeDB-30) ship as insightface ``.bin`` files: a
pickle of ``(bins, issame)`` where ``bins`` holds 2N encoded images (JPEG or PNG bytes; images
``2i`` and ``2i+1`` form pair ``i``) and ``issame`` N booleans. The protocol:

* embed every image and its horizontal flip, add the two embeddings, L2-normalise
  ("flip test");
* score a pair by the cosine of its two embeddings;
* 10-fold cross-validation over the pairs in file order (no shuffling): for each fold pick the
  threshold with the best accuracy on the other 9 folds and measure accuracy on the held-out
  fold; report mean and standard deviation of the 10 accuracies.

insightface thresholds the squared Euclidean distance ``d = 2 - 2 cos`` of the normalised
embeddings on the grid ``0, 0.01, ..., 3.99`` and calls a pair "same" when ``d < t``; here the
same grid is expressed on cosines (``cos > 1 - t/2``), with the same tie rule (the smallest
distance threshold, i.e. the largest cosine threshold, wins), so the numbers are the same.

    python -m quant.verification --bin lfw.bin [--variant seesaw_shuffle] [--weights PATH]
                                 [--artifact DIR] [--peer] [--json out.json]
    python -m quant.verification --shipped [...]     # pairs built from the shipped faces

Reading ``.bin`` files never unpickles arbitrary classes: only lists, tuples, bytes and bools
(and numpy's bool scalars, which some converted files hold) are accepted.
"""
import argparse
import io
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from . import cli, files
from .cli import UserError

SIZE = 112


class BinFormatError(UserError, ValueError):
    """A verification ``.bin`` file is malformed; the message names the file and the entry."""


# ----------------------------------------------------------------------------------------------
# .bin files

def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it to rebuild ``bytes``; latin-1 only."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` restricted to bool scalars."""
    if not isinstance(dtype, np.dtype) or dtype != np.bool_:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype} is not allowed "
                                     f"(only bool)")
    if not isinstance(data, (bytes, bytearray)) or len(data) != 1:
        raise pickle.UnpicklingError("malformed numpy bool scalar")
    return np.bool_(data[0] != 0)


def _numpy_dtype(spec, align=False, copy=False):
    """``numpy.dtype`` restricted to the bool dtype."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if spec not in ("b1", "?", "bool"):
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not allowed (only bool)")
    return np.dtype(np.bool_)


class _BinUnpickler(pickle.Unpickler):
    """Unpickler for verification ``.bin`` files: refuses every global except the few needed to
    rebuild bytes and bools. Lists, tuples, bytes, ints and bools need no global at all."""

    _ALLOWED = {
        ("builtins", "bytes"): bytes,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "bool"): bool,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("__builtin__", "bytes"): bytes,
        ("__builtin__", "bytearray"): bytearray,
        ("__builtin__", "bool"): bool,
        ("__builtin__", "list"): list,
        ("__builtin__", "tuple"): tuple,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        ("numpy", "dtype"): _numpy_dtype,
    }

    def __init__(self, file, source):
        super().__init__(file, encoding="bytes")    # Python-2 str -> bytes, as insightface does
        self.source = source

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise BinFormatError(
                f"{self.source}: refusing to unpickle {module}.{name}: a verification .bin may "
                f"only hold lists of image bytes and bools") from None


def _decode(data, source, index, resize):
    """One entry's encoded bytes -> RGB uint8 112x112 through the project's image stage
    (:func:`quant.faces.decode_image`: any common mode; the sets' images are aligned crops,
    so ``resize`` only resizes: :func:`quant.align.prepare` with ``aligned=True``)."""
    from .align import prepare
    from .faces import ImageReadError, decode_image
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        data = data.tobytes()
    if not isinstance(data, (bytes, bytearray)):
        raise BinFormatError(f"{source}: entry {index} is {type(data).__name__}, "
                             f"not encoded image bytes")
    try:
        img = decode_image(bytes(data), f"entry {index}")
    except ImageReadError as e:
        raise BinFormatError(f"{source}: entry {index}: cannot decode image "
                             f"({str(e).split(': ', 1)[1]})") from None
    if img.shape[:2] != (SIZE, SIZE) and not resize:
        raise BinFormatError(f"{source}: entry {index}: image is {img.shape[0]}x"
                             f"{img.shape[1]}, expected {SIZE}x{SIZE} (pass resize=True / "
                             f"--resize to resize)")
    return prepare(img, f"{source}: entry {index}", aligned=True)[0].face


def read_bin(path, resize=False, limit=None, progress=None):
    """Read an insightface verification ``.bin``.

    Returns ``(images, issame)``: uint8 ``(2N, 112, 112, 3)`` RGB NHWC, pair ``i`` being images
    ``2i`` and ``2i+1``, and bool ``(N,)``. ``resize``: resize images that are not 112x112
    (bicubic, the project's image stage) instead of failing. ``limit``: read only the first
    ``limit`` pairs.
    ``progress(done, total)`` is called every 1000 images.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: verification .bin not found")
    try:
        with open(path, "rb") as f:
            obj = _BinUnpickler(f, path).load()
    except BinFormatError:
        raise
    except Exception as e:
        with open(path, "rb") as f:
            head = f.read(2)
        why = ("the file is empty" if not head else
               f"not a pickle: first bytes {head!r}" if head[:1] != b"\x80" else
               f"{type(e).__name__}: {e}")
        raise BinFormatError(f"{path}: not a readable verification .bin pickle ({why})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise BinFormatError(f"{path}: expected a pickled pair (images, issame), found "
                             f"{type(obj).__name__}"
                             f"{' of length %d' % len(obj) if isinstance(obj, (tuple, list)) else ''}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)):
        raise BinFormatError(f"{path}: images must be a list, found {type(bins).__name__}")
    if not isinstance(issame, (list, tuple)):
        raise BinFormatError(f"{path}: issame must be a list, found {type(issame).__name__}")
    for i, s in enumerate(issame):
        if not isinstance(s, (bool, np.bool_)) and s not in (0, 1):
            raise BinFormatError(f"{path}: issame entry {i} is {s!r}, not a bool")
    if len(bins) != 2 * len(issame):
        raise BinFormatError(f"{path}: {len(bins)} images for {len(issame)} pairs; "
                             f"expected {2 * len(issame)}")
    if not issame:
        raise BinFormatError(f"{path}: no pairs")
    n = len(issame) if limit is None else min(int(limit), len(issame))
    images = np.empty((2 * n, SIZE, SIZE, 3), np.uint8)
    for i in range(2 * n):
        images[i] = _decode(bins[i], path, i, resize)
        if progress and (i + 1) % 1000 == 0:
            progress(i + 1, 2 * n)
    return images, np.asarray(issame[:n], dtype=bool)


def write_bin(path, images, issame):
    """Write ``images`` (uint8 ``(2N, 112, 112, 3)`` RGB, pairs interleaved) and ``issame``
    (``N`` bools) as an insightface ``.bin`` with PNG-encoded images."""
    import imageio.v3 as iio
    images = np.asarray(images)
    issame = [bool(s) for s in np.asarray(issame).ravel()]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{path}: images must be uint8 (2N, H, W, 3), not "
                         f"{images.dtype} {images.shape}")
    if len(images) != 2 * len(issame):
        raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs; "
                         f"expected {2 * len(issame)}")
    bins = [iio.imwrite("<bytes>", img, extension=".png") for img in images]
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=4)


def interleave(images_a, images_b):
    """``(N, ...)`` and ``(N, ...)`` -> ``(2N, ...)`` with ``a[i]`` at ``2i`` and ``b[i]`` at
    ``2i+1`` (the ``.bin`` layout)."""
    images_a, images_b = np.asarray(images_a), np.asarray(images_b)
    if images_a.shape != images_b.shape:
        raise ValueError(f"pair halves differ in shape: {images_a.shape} vs {images_b.shape}")
    out = np.empty((2 * len(images_a),) + images_a.shape[1:], images_a.dtype)
    out[0::2], out[1::2] = images_a, images_b
    return out


# ----------------------------------------------------------------------------------------------
# Pairs from the shipped faces

def perturb(face, rng):
    """A realistic re-capture of ``face`` (uint8 112x112x3): shift up to +-4 px, scale
    0.93-1.07, rotation up to +-6 degrees, horizontal flip with probability 1/2, brightness
    +-20 levels, contrast 0.85-1.15, Gaussian noise of sigma 1-4 levels."""
    from skimage.transform import AffineTransform, warp
    c = (SIZE - 1) / 2
    scale = rng.uniform(0.93, 1.07)
    angle = np.deg2rad(rng.uniform(-6, 6))
    shift = rng.uniform(-4, 4, size=2)
    centre = AffineTransform(translation=(-c, -c))
    tf = centre + AffineTransform(scale=scale, rotation=angle) + \
        AffineTransform(translation=(c + shift[0], c + shift[1]))
    img = warp(face.astype(np.float64), tf.inverse, order=1, mode="edge", preserve_range=True)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.85, 1.15) + mean + rng.uniform(-20, 20)
    img = img + rng.normal(0, rng.uniform(1, 4), size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def shipped_pairs(faces, seed=0):
    """Verification pairs from the shipped evaluation faces (``quant.faces.load("evaluation")``).

    The shipped LFW subset has no identity labels, so real same-identity pairs cannot be
    formed. Instead, for ``N`` faces this returns ``2N`` pairs, balanced:

    * ``N`` "same" pairs: face ``i`` and a perturbed copy of face ``i`` (see :func:`perturb`);
    * ``N`` "different" pairs: face ``i`` and a perturbed copy of face ``j != i`` (``j`` from a
      random derangement, so every face appears once on each side).

    The second image is perturbed in both kinds so that perturbation alone does not tell them
    apart. This measures whether an embedding is stable under capture changes and distinct
    between faces -- a proxy, *not* an identity-verification accuracy: the same-pairs are far
    easier than real LFW same-identity pairs (same photograph), and two different LFW crops may
    even show the same person. Deterministic by ``seed``; pairs are shuffled so that folds mix
    both kinds. Returns ``(images_a, images_b, issame)``.
    """
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(f"faces must be uint8 (N, {SIZE}, {SIZE}, 3), not "
                         f"{faces.dtype} {faces.shape}")
    n = len(faces)
    if n < 2:
        raise ValueError(f"need at least 2 faces to form different pairs, got {n}")
    rng = np.random.default_rng(seed)
    while True:                                   # random derangement
        other = rng.permutation(n)
        if not np.any(other == np.arange(n)):
            break
    first = np.concatenate([np.arange(n), np.arange(n)])
    second = np.concatenate([np.arange(n), other])
    issame = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    order = rng.permutation(2 * n)
    first, second, issame = first[order], second[order], issame[order]
    images_b = np.stack([perturb(faces[j], rng) for j in second])
    return faces[first].copy(), images_b, issame


def all_pairs(faces, seed=0):
    """Every pair of the evaluation faces, for decision-agreement measurements.

    Each face gets one perturbed copy ``P[j]`` (:func:`perturb`); pair ``(i, j)`` compares face
    ``i`` with ``P[j]``, so there are ``N`` "same" pairs (``i == j``) and ``N*(N-1)`` "different"
    ones, all with one perturbed side as in :func:`shipped_pairs`. Returns ``(copies, issame)``
    where ``issame`` is the ``(N, N)`` identity matrix: scores are the matrix
    ``emb(faces) @ emb(copies).T``, so only ``2N`` embeddings are computed.
    """
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(f"faces must be uint8 (N, {SIZE}, {SIZE}, 3), not "
                         f"{faces.dtype} {faces.shape}")
    rng = np.random.default_rng(seed)
    copies = np.stack([perturb(f, rng) for f in faces])
    return copies, np.eye(len(faces), dtype=bool)


# ----------------------------------------------------------------------------------------------
# Metrics

def _check_scores(scores, issame):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    issame = np.asarray(issame).ravel()
    if issame.dtype != bool:
        if not np.all(np.isin(issame, (0, 1))):
            raise ValueError("issame must hold bools (or 0/1)")
        issame = issame.astype(bool)
    if scores.shape != issame.shape:
        raise ValueError(f"{scores.size} scores for {issame.size} issame labels")
    if scores.size == 0:
        raise ValueError("no scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores contain {np.count_nonzero(~np.isfinite(scores))} "
                         f"non-finite values")
    return scores, issame


def equal_error(scores, issame) -> dict:
    """Equal-error point of similarity ``scores`` (pair called "same" when score > threshold).

    Candidate thresholds are the midpoints between consecutive distinct scores (and one below
    the lowest and one above the highest). FAR(t) = share of different pairs scoring above t,
    FRR(t) = share of same pairs scoring at or below t. Among the candidates minimising
    ``|FAR - FRR|``, the point halfway between the lowest and the highest is returned.
    Returns ``dict(threshold, eer, far, frr)``, ``eer`` = ``(far + frr) / 2``.
    """
    scores, issame = _check_scores(scores, issame)
    same, diff = np.sort(scores[issame]), np.sort(scores[~issame])
    if same.size == 0 or diff.size == 0:
        raise ValueError(f"equal error needs both kinds of pairs; got {same.size} same and "
                         f"{diff.size} different")
    u = np.unique(scores)
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    far = (diff.size - np.searchsorted(diff, cands, side="right")) / diff.size
    frr = np.searchsorted(same, cands, side="right") / same.size
    gap = np.abs(far - frr)
    best = np.flatnonzero(gap <= gap.min() + 1e-12)
    k_lo, k_hi = best[0], best[-1]
    threshold = (cands[k_lo] + cands[k_hi]) / 2
    k = best[len(best) // 2]
    return dict(threshold=float(threshold), eer=float((far[k] + frr[k]) / 2),
                far=float(far[k]), frr=float(frr[k]))


def eer_threshold(scores, issame) -> float:
    """Equal-error threshold on cosine ``scores``; see :func:`equal_error`."""
    return equal_error(scores, issame)["threshold"]


def insightface_thresholds():
    """insightface's distance grid ``0, 0.01, ..., 3.99`` as cosine thresholds ``1 - d/2``,
    in insightface's search order (the first best one wins)."""
    return 1.0 - np.arange(0, 4, 0.01) / 2


def _accuracies(scores, issame, thresholds):
    pred = scores[None, :] > thresholds[:, None]
    return (pred == issame[None, :]).mean(axis=1)


def kfold_accuracy(scores, issame, folds=10, thresholds=None) -> dict:
    """insightface k-fold verification accuracy of cosine ``scores``.

    Pairs are split in file order into ``folds`` contiguous folds (``numpy.array_split``, which
    is how scikit-learn's unshuffled ``KFold`` splits). For each fold the threshold with the
    best accuracy on the other folds (first best in ``thresholds`` order; default:
    :func:`insightface_thresholds`) is applied to the held-out fold. Returns ``dict(mean, std,
    accuracies, thresholds, folds)``; ``std`` is the population standard deviation, as
    insightface reports it.
    """
    scores, issame = _check_scores(scores, issame)
    folds = int(folds)
    if not 2 <= folds <= scores.size:
        raise ValueError(f"folds must be between 2 and the number of pairs ({scores.size}), "
                         f"not {folds}")
    grid = insightface_thresholds() if thresholds is None else \
        np.asarray(thresholds, dtype=np.float64).ravel()
    accs, thrs = [], []
    for test in np.array_split(np.arange(scores.size), folds):
        train = np.ones(scores.size, bool)
        train[test] = False
        k = int(np.argmax(_accuracies(scores[train], issame[train], grid)))
        thrs.append(float(grid[k]))
        accs.append(float(_accuracies(scores[test], issame[test], grid[k:k + 1])[0]))
    return dict(mean=float(np.mean(accs)), std=float(np.std(accs)), accuracies=accs,
                thresholds=thrs, folds=folds)


def best_threshold(scores, issame, thresholds=None) -> dict:
    """The grid threshold with the best accuracy on all pairs: ``dict(threshold, accuracy)``."""
    scores, issame = _check_scores(scores, issame)
    grid = insightface_thresholds() if thresholds is None else \
        np.asarray(thresholds, dtype=np.float64).ravel()
    acc = _accuracies(scores, issame, grid)
    k = int(np.argmax(acc))
    return dict(threshold=float(grid[k]), accuracy=float(acc[k]))


# ----------------------------------------------------------------------------------------------
# Evaluation of an embedding function

def embed_all(embed_fn, images, flip=True, batch=64, progress=None) -> np.ndarray:
    """L2-normalised embeddings of uint8 NHWC ``images``; with ``flip``, of
    ``embed(image) + embed(horizontal flip)`` (insightface's flip test)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), not {images.dtype} {images.shape}")
    out = None
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        e = np.asarray(embed_fn(chunk), dtype=np.float64)
        if e.ndim != 2 or e.shape[0] != len(chunk):
            raise ValueError(f"embed_fn returned shape {e.shape} for {len(chunk)} images; "
                             f"expected ({len(chunk)}, D)")
        if flip:
            e = e + np.asarray(embed_fn(np.ascontiguousarray(chunk[:, :, ::-1])),
                               dtype=np.float64)
        if out is None:
            out = np.empty((len(images), e.shape[1]))
        out[start:start + len(chunk)] = e
        if progress:
            progress(start + len(chunk), len(images))
    if not np.all(np.isfinite(out)):
        raise ValueError("embed_fn returned non-finite embeddings")
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norm, 1e-12)


def evaluate(embed_fn, images, issame, folds=10, flip=True, batch=64, progress=None) -> dict:
    """Verification accuracy of ``embed_fn`` (uint8 NHWC faces -> (N, D) float embeddings).

    ``images``: uint8 ``(2N, 112, 112, 3)`` with pairs interleaved (``.bin`` layout) or a tuple
    ``(images_a, images_b)``; ``issame``: ``N`` bools. Returns a dict with ``accuracy_mean``,
    ``accuracy_std`` (k-fold, insightface protocol), ``fold_accuracies``, ``fold_thresholds``,
    ``best_threshold`` / ``best_accuracy`` (on all pairs), ``eer``, ``eer_threshold``, mean
    scores of same and different pairs, and the arrays ``scores`` and ``embeddings``
    (drop them with :func:`summary` before writing JSON).
    """
    if isinstance(images, tuple) and len(images) == 2:
        images = interleave(*images)
    images = np.asarray(images)
    issame = np.asarray(issame).ravel()
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs; expected "
                         f"{2 * len(issame)}")
    t0 = time.time()
    emb = embed_all(embed_fn, images, flip=flip, batch=batch, progress=progress)
    seconds = time.time() - t0
    scores = np.sum(emb[0::2] * emb[1::2], axis=1)
    kf = kfold_accuracy(scores, issame, folds)
    best = best_threshold(scores, issame)
    eq = equal_error(scores, issame)
    issame = issame.astype(bool)
    return dict(pairs=int(len(issame)), same_pairs=int(issame.sum()), flip=bool(flip),
                folds=kf["folds"], accuracy_mean=kf["mean"], accuracy_std=kf["std"],
                fold_accuracies=kf["accuracies"], fold_thresholds=kf["thresholds"],
                best_threshold=best["threshold"], best_accuracy=best["accuracy"],
                eer=eq["eer"], eer_threshold=eq["threshold"],
                same_score_mean=float(scores[issame].mean()),
                diff_score_mean=float(scores[~issame].mean()),
                embed_seconds=seconds, scores=scores, embeddings=emb)


def summary(result: dict) -> dict:
    """``result`` without its numpy arrays (JSON-ready)."""
    return {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}


# ----------------------------------------------------------------------------------------------
# Command line

def float_embedder(model):
    """uint8 NHWC faces -> float embeddings of a float zoo model."""
    import torch
    from .zoo import preprocess

    def embed(faces):
        with torch.no_grad():
            return model(preprocess(faces)).numpy()
    return embed


def golden_embedder(artifact_dir):
    """uint8 NHWC faces -> float embeddings of the integer golden model of an artifact."""
    from .artifact import load
    from .golden import GoldenModel
    return GoldenModel(load(artifact_dir)).embed


def _progress(label):
    last = [0.0]

    def report(done, total):
        now = time.time()
        if done == total or now - last[0] > 2:
            last[0] = now
            print(f"  {label}: {done}/{total}", flush=True)
    return report


def main(argv=None):
    return cli.run(_main, argv, prog="python -m quant.verification")


def _main(argv):
    ap = cli.ArgumentParser(prog="python -m quant.verification", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bin", type=Path, help="insightface verification .bin (lfw.bin, ...)")
    src.add_argument("--shipped", action="store_true",
                     help="pairs built from the shipped evaluation faces (see shipped_pairs)")
    ap.add_argument("--variant", default="seesaw_shuffle", type=cli.variant)
    ap.add_argument("--weights", type=Path, help="float checkpoint (default models/VARIANT.pt)")
    ap.add_argument("--artifact", type=Path, help="quantized artifact folder: also evaluate "
                                                  "the integer golden model")
    ap.add_argument("--peer", action="store_true",
                    help="also evaluate PyTorch's own int8 quantization (quant.peer)")
    ap.add_argument("--folds", type=cli.int_range(2, 100, "folds"), default=10)
    ap.add_argument("--no-flip", action="store_true", help="no flip test")
    ap.add_argument("--resize", action="store_true", help="resize images that are not 112x112")
    ap.add_argument("--limit", type=cli.count, help="use only the first LIMIT pairs")
    ap.add_argument("--seed", type=cli.non_negative, default=0, help="seed of --shipped pairs")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    # Inputs are checked before any image is decoded or any model built.
    if args.bin is not None and not args.bin.is_file():
        raise cli.UserError(f"--bin {args.bin}", "no such file")
    if args.weights is not None and not args.weights.is_file():
        raise cli.UserError(f"--weights {args.weights}", "no such file")
    if args.artifact is not None:
        from .artifact import load
        load(args.artifact)          # ArtifactError names the file and what is wrong
    if args.json is not None and args.json.is_dir():
        raise cli.UserError(f"--json {args.json}", "is a folder, not a file")

    from . import faces as face_set
    from .reference_model import load_reference
    if args.bin:
        print(f"reading {args.bin}", flush=True)
        images, issame = read_bin(args.bin, resize=args.resize, limit=args.limit,
                                  progress=_progress("decoded"))
        source = str(args.bin)
    else:
        a, b, issame = shipped_pairs(face_set.load("evaluation"), seed=args.seed)
        if args.limit:
            a, b, issame = a[:args.limit], b[:args.limit], issame[:args.limit]
        images = interleave(a, b)
        source = f"shipped evaluation faces, seed {args.seed}"
    print(f"{len(issame)} pairs ({int(issame.sum())} same) from {source}", flush=True)

    model = load_reference(args.variant, args.weights)
    embedders = {"float": float_embedder(model)}
    if args.artifact:
        embedders["golden"] = golden_embedder(args.artifact)
    if args.peer:
        from .peer import torch_ao_embedder
        print("torch.ao: calibrating on the calibration faces", flush=True)
        embedders["torch.ao int8"] = torch_ao_embedder(model, face_set.load("calibration"))

    results = {}
    for name, fn in embedders.items():
        print(f"embedding with {name}", flush=True)
        results[name] = evaluate(fn, images, issame, folds=args.folds, flip=not args.no_flip,
                                 progress=_progress(name))
    ref = results["float"]["embeddings"]
    for name, r in results.items():
        cos = np.sum(r["embeddings"] * ref, axis=1)
        r["cosine_vs_float_mean"] = float(cos.mean())
        r["cosine_vs_float_min"] = float(cos.min())

    header = (f"{'model':<14} {'accuracy':>16} {'best thr':>9} {'best acc':>9} {'EER':>7} "
              f"{'EER thr':>8} {'cos vs float':>13}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        acc = f"{100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f}"
        print(f"{name:<14} {acc:>16} {r['best_threshold']:>9.3f} "
              f"{100 * r['best_accuracy']:>8.2f}% {100 * r['eer']:>6.2f}% "
              f"{r['eer_threshold']:>8.3f} {r['cosine_vs_float_mean']:>13.5f}")
    if args.json:
        out = dict(source=source, variant=args.variant,
                   weights=str(args.weights) if args.weights else None,
                   artifact=str(args.artifact) if args.artifact else None,
                   results={k: summary(v) for k, v in results.items()})
        files.write_text(args.json, json.dumps(out, indent=2))
        print(f"wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
