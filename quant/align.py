"""Face detection and alignment: a photo in, the 112x112 crop the embedder was trained on out.

SeesawFaceNets, like every ArcFace-style embedder, expects a face whose eyes, nose tip and mouth
corners sit at fixed positions of a 112x112 crop. :func:`prepare` turns any photo into such
crops; every image path of the project goes through it (``quant.faces.load_images``, hence
``make sim IMAGES=`` and the fidelity tools, and ``python -m firmware.run``).

Steps
-----
1. **Detection** with MTCNN (Zhang, Zhang, Li, Qiao: "Joint Face Detection and Alignment using
   Multi-task Cascaded Convolutional Networks"): an image pyramid through the fully
   convolutional P-Net, candidate boxes refined by R-Net (24x24) and O-Net (48x48), which also
   gives five landmarks (eye centres, nose tip, mouth corners). The three networks are written
   here (:class:`PNet`, :class:`RNet`, :class:`ONet`); their trained weights are the ``.pt``
   files inside the ``facenet-pytorch`` wheel (2 MB), which ``make setup`` installs with
   ``--no-deps`` (the package pins an old torch). The files are read from the installed folder;
   the package itself is never imported and nothing is downloaded at run time.
2. **Alignment**: the least-squares similarity transform (rotation, uniform scale, shift) that
   maps the five landmarks onto :data:`TEMPLATE`, and a bilinear warp to 112x112.

:data:`TEMPLATE` is the 5-point 112x112 template used to align the insightface training sets
(MS1M, Glint360K), as published in the insightface project's reference alignment code
(``arcface_dst`` in ``face_align.py``, the ArcFace authors' code; ArcFace: "Additive Angular
Margin Loss for Deep Face Recognition").

Policy (:func:`prepare`): an image that is already 112x112 is taken as an aligned crop and
passes unchanged (the shipped faces are such crops); ``aligned=True`` forces that for any size
(the image is only resized). Otherwise the largest face is aligned, or every face with
``every_face=True``. No face, or an image too small to hold one, raises :class:`FaceError`
naming the image.

Why MTCNN rather than OpenCV's Haar cascades (both measured in ``reports/align.md``): MTCNN
gives the five template landmarks itself, while a cascade gives a box and, from a second
cascade, eye boxes, whose centres are a coarse stand-in for the eyes and which miss the nose
and mouth. On the astronaut's copies MTCNN finds exactly one face each time with its five
points; the cascades (opencv-python-headless 4.14) add false faces on the 2x and mirrored
copies and find one eye at 0.5x. On the shipped evaluation faces MTCNN finds 51 of 51, the
cascades 43, with both eyes in 27. Both take about the same time (0.3-2.7 s a photo for MTCNN,
0.3-3.2 s for the cascades, on a shared 2-core machine), and OpenCV 5 no longer ships the
cascades.

    python -m quant.align [--show photo.jpg ...] [--out reports]

writes ``reports/align.{json,md,png}``: the astronaut figures (detections, golden-model
embedding cosines of the aligned crops of rotated, scaled and mirrored copies to the
unrotated one) and detection on the shipped evaluation faces. ``--show`` draws the detections
and landmarks of the given photos beside their aligned crops (``build/align_show.png``).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cli, files
from .cli import UserError

SIZE = 112
#: Eye centres (left, right as seen in the image), nose tip, mouth corners (left, right) in the
#: 112x112 crop: the insightface alignment template (``arcface_dst``), x then y in pixels.
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]])
#: Smallest face the detector looks for (pixels, side of the box); also the smallest image side
#: that can hold a face.
MIN_FACE = 20
WEIGHTS_PACKAGE = "facenet-pytorch"
WEIGHTS_FOLDER = "facenet_pytorch/data"


class FaceError(UserError, ValueError):
    """No usable face in an image; the message names the image."""


# ----------------------------------------------------------------------------------------------
# The three networks (layer names are those of the weight files)

def _nets():
    import torch
    from torch import nn

    class PNet(nn.Module):
        """12x12 windows, fully convolutional: face probability and box offsets per window
        (stride 2)."""

        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return torch.softmax(self.conv4_1(x), 1)[:, 1], self.conv4_2(x)

    def _flat(x):
        # The dense layers were trained on feature maps flattened width-major (W, H, C).
        return x.permute(0, 3, 2, 1).reshape(len(x), -1)

    class RNet(nn.Module):
        """24x24 crops: face probability and box offsets."""

        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            pool = nn.functional.max_pool2d
            x = pool(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
            x = pool(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
            x = self.prelu4(self.dense4(_flat(self.prelu3(self.conv3(x)))))
            return torch.softmax(self.dense5_1(x), 1)[:, 1], self.dense5_2(x)

    class ONet(nn.Module):
        """48x48 crops: face probability, box offsets and five landmarks (x0..x4, y0..y4 as
        fractions of the box)."""

        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2 = nn.Linear(256, 2), nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            pool = nn.functional.max_pool2d
            x = pool(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
            x = pool(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
            x = pool(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
            x = self.prelu5(self.dense5(_flat(self.prelu4(self.conv4(x)))))
            return torch.softmax(self.dense6_1(x), 1)[:, 1], self.dense6_2(x), self.dense6_3(x)

    return PNet, RNet, ONet


def weights_folder() -> Path:
    """The folder of ``pnet.pt``, ``rnet.pt``, ``onet.pt`` in the installed facenet-pytorch
    wheel (located through its metadata; the package is not imported)."""
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        folder = Path(distribution(WEIGHTS_PACKAGE).locate_file(WEIGHTS_FOLDER))
    except PackageNotFoundError:
        folder = None
    if folder is None or not (folder / "onet.pt").exists():
        raise FileNotFoundError(
            f"the face detector's weights ({WEIGHTS_FOLDER}/pnet.pt, rnet.pt, onet.pt of the "
            f"{WEIGHTS_PACKAGE} wheel) are not installed: run `make setup` (it runs "
            f"`pip install --no-deps {WEIGHTS_PACKAGE}==2.6.0`)")
    return folder


# ----------------------------------------------------------------------------------------------
# Detection

@dataclass
class Face:
    """A detected face: ``box`` (x0, y0, x1, y1) and ``landmarks`` (5, 2) x, y in image pixels,
    in :data:`TEMPLATE`'s order; ``score``: O-Net's face probability."""
    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def _nms(boxes, scores, threshold, mode="union"):
    """Indices kept by greedy non-maximum suppression (overlap: intersection over union, or
    over the smaller box with ``mode="min"``)."""
    order = np.argsort(-scores)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) -
                    np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) -
                    np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= threshold]
    return np.array(keep, dtype=np.int64)


def _regress(boxes, offsets):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes + offsets * np.stack([w, h, w, h], 1)


def _square(boxes):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


class Detector:
    """MTCNN with the weights of the facenet-pytorch wheel. ``detect(rgb)`` -> faces, largest
    first. Thresholds and the pyramid factor are the paper's."""

    def __init__(self, min_face=MIN_FACE, thresholds=(0.6, 0.7, 0.7), factor=0.709):
        import torch
        folder = weights_folder()
        self.nets = []
        for cls, name in zip(_nets(), ("pnet", "rnet", "onet")):
            net = cls()
            net.load_state_dict(torch.load(folder / f"{name}.pt", weights_only=True))
            self.nets.append(net.eval())
        self.min_face, self.thresholds, self.factor = min_face, thresholds, factor

    @staticmethod
    def _tensor(img):
        import torch
        return (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None]
                - 127.5) / 128.0

    def _crops(self, x, boxes, size):
        """Square boxes cut from the image tensor (zero outside it), resized to size x size."""
        import torch
        _, _, H, W = x.shape
        out = []
        for x0, y0, x1, y1 in np.rint(boxes).astype(int):
            patch = torch.zeros(1, 3, max(y1 - y0, 1), max(x1 - x0, 1))
            sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
            if sx1 > sx0 and sy1 > sy0:
                patch[:, :, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = x[:, :, sy0:sy1, sx0:sx1]
            out.append(torch.nn.functional.interpolate(patch, size=(size, size),
                                                       mode="bilinear", antialias=True))
        return torch.cat(out)

    def detect(self, img: np.ndarray) -> list[Face]:
        """The faces in an RGB uint8 image, largest first. Runs on one torch thread: the
        networks' layers are small, and on a shared 2-core machine (load 25) one thread took
        1.6 s for the astronaut where two took 5-9 s."""
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._detect(img)
        finally:
            torch.set_num_threads(threads)

    def _detect(self, img: np.ndarray) -> list[Face]:
        import torch
        pnet, rnet, onet = self.nets
        t1, t2, t3 = self.thresholds
        H, W = img.shape[:2]
        x = self._tensor(img)
        # Stage 1: P-Net over a pyramid whose first level maps min_face pixels to 12.
        scale, found = 12.0 / self.min_face, []
        with torch.no_grad():
            while min(H, W) * scale >= 12:
                h, w = int(np.ceil(H * scale)), int(np.ceil(W * scale))
                prob, reg = pnet(torch.nn.functional.interpolate(
                    x, size=(h, w), mode="bilinear", antialias=True))
                prob, reg = prob[0].numpy(), reg[0].numpy()
                ys, xs = np.nonzero(prob > t1)
                if ys.size:
                    b = np.stack([xs * 2, ys * 2, xs * 2 + 12, ys * 2 + 12], 1) / scale
                    s = prob[ys, xs]
                    k = _nms(b, s, 0.5)
                    found.append((b[k], s[k], reg[:, ys, xs].T[k]))
                scale *= self.factor
            if not found:
                return []
            boxes, scores, offs = (np.concatenate(v) for v in zip(*found))
            k = _nms(boxes, scores, 0.7)
            boxes = _square(_regress(boxes[k], offs[k]))
            # Stage 2: R-Net on 24x24 crops.
            prob, reg = rnet(self._crops(x, boxes, 24))
            prob, reg = prob.numpy(), reg.numpy()
            k = np.flatnonzero(prob > t2)
            if not k.size:
                return []
            boxes, scores, reg = boxes[k], prob[k], reg[k]
            k = _nms(boxes, scores, 0.7)
            boxes = _square(_regress(boxes[k], reg[k]))
            # Stage 3: O-Net on 48x48 crops; landmarks.
            prob, reg, pts = (t.numpy() for t in onet(self._crops(x, boxes, 48)))
        k = np.flatnonzero(prob > t3)
        if not k.size:
            return []
        boxes, scores, reg, pts = boxes[k], prob[k], reg[k], pts[k]
        w, h = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
        marks = np.stack([boxes[:, :1] + w * pts[:, :5], boxes[:, 1:2] + h * pts[:, 5:]], 2)
        boxes = _regress(boxes, reg)
        k = _nms(boxes, scores, 0.7, mode="min")
        faces = [Face(boxes[i], float(scores[i]), marks[i]) for i in k]
        return sorted(faces, key=lambda f: -f.area)


_DETECTOR = None


def detector() -> Detector:
    """One :class:`Detector` per process (loading the weights takes a few milliseconds; the
    networks are reused)."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = Detector()
    return _DETECTOR


# ----------------------------------------------------------------------------------------------
# Alignment

def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 matrix of the similarity transform (rotation, uniform scale, translation) that
    maps points ``src`` onto ``dst`` with the least squared error (Umeyama's closed form, no
    reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum() / len(src)
    if var < 1e-12:
        raise ValueError("degenerate landmarks: all at one point")
    u, sv, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ flip @ vt
    scale = np.trace(np.diag(sv) @ flip) / var
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = md - scale * rot @ ms
    return m


def warp(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 crop whose landmarks fall on :data:`TEMPLATE` (bilinear, uint8 RGB)."""
    from skimage.transform import warp as sk_warp
    m = similarity(landmarks, TEMPLATE)
    out = sk_warp(img.astype(np.float64), np.linalg.inv(m), output_shape=(SIZE, SIZE), order=1,
                  mode="constant", cval=0.0, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize(img: np.ndarray) -> np.ndarray:
    """Bicubic, anti-aliased resize to 112x112, uint8 (unchanged if already that size)."""
    from .faces import _resize
    return img if img.shape[:2] == (SIZE, SIZE) else _resize(img)


@dataclass
class Prepared:
    """One 112x112 face ready for the engine and how it was obtained: ``how`` is ``"aligned"``
    (detected and warped), ``"as given"`` (an already aligned 112x112 crop) or ``"forced"``
    (``aligned=True``: only resized); ``faces``: every detection in the image (largest first),
    ``index``: the one this crop comes from."""
    source: str
    image_shape: tuple
    face: np.ndarray
    how: str
    faces: list = field(default_factory=list)
    index: int | None = None

    def describe(self) -> str:
        h, w = self.image_shape[:2]
        if self.how != "aligned":
            what = ("already an aligned 112x112 crop, passed unchanged" if self.how == "as given"
                    else f"{w}x{h}, taken as aligned (resized to 112x112, no detection)")
            return f"{self.source}: {what}"
        f = self.faces[self.index]
        x0, y0, x1, y1 = f.box
        eyes = "; eyes at " + ", ".join(f"({x:.0f}, {y:.0f})" for x, y in f.landmarks[:2])
        many = f" (face {self.index + 1} of {len(self.faces)})" if len(self.faces) > 1 else ""
        return (f"{self.source}: {w}x{h}, {len(self.faces)} face(s); aligned the "
                f"{x1 - x0:.0f}x{y1 - y0:.0f} face at ({x0:.0f}, {y0:.0f}), "
                f"score {f.score:.3f}{eyes}{many}")


def prepare(img: np.ndarray, source="image", *, aligned=False, every_face=False,
            det: Detector | None = None) -> list[Prepared]:
    """An RGB uint8 image -> its 112x112 face crop(s) (see the module's policy). ``source``
    names the image in messages and errors."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise FaceError(f"{source}: expected an RGB uint8 image, got {img.dtype} {img.shape}")
    if img.shape[:2] == (SIZE, SIZE):
        return [Prepared(source, img.shape, img, "as given")]
    if aligned:
        return [Prepared(source, img.shape, resize(img), "forced")]
    h, w = img.shape[:2]
    if min(h, w) < MIN_FACE:
        raise FaceError(f"{source}: {w}x{h} pixels is too small to hold a face (the detector "
                        f"needs at least {MIN_FACE} pixels a side)")
    faces = (det or detector()).detect(img)
    if not faces:
        raise FaceError(f"{source}: no face found (MTCNN, faces of {MIN_FACE} pixels and more; "
                        f"pass --aligned if the image is already an aligned face crop)")
    picks = range(len(faces)) if every_face else [0]
    return [Prepared(source, img.shape, warp(img, faces[i].landmarks), "aligned", faces, i)
            for i in picks]


# ----------------------------------------------------------------------------------------------
# Pictures

def draw(prepared: list[Prepared], images: list[np.ndarray], path, dpi=90) -> Path:
    """One row per image: the photo with every detection (box, score, five landmarks; the
    aligned ones in green) and beside it the 112x112 crops the accelerator is given, with the
    template's points. Written to a temporary name and renamed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    rows = {}
    for p in prepared:
        rows.setdefault(p.source, []).append(p)
    sources = list(rows)
    ncrop = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(sources), 1 + ncrop, squeeze=False,
                             figsize=(3.2 + 1.8 * ncrop, 3.2 * len(sources)),
                             gridspec_kw={"width_ratios": [2.2] + [1] * ncrop})
    for r, (src, img) in enumerate(zip(sources, images)):
        ps = rows[src]
        ax = axes[r][0]
        ax.imshow(img)
        ax.set_title(Path(src).name if "/" in src else src, fontsize=8)
        used = {p.index for p in ps}
        for i, f in enumerate(ps[0].faces):
            colour = "lime" if i in used else "orange"
            x0, y0, x1, y1 = f.box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.2))
            ax.plot(f.landmarks[:, 0], f.landmarks[:, 1], "o", ms=2.5, color="red")
            ax.text(x0, y0 - 3, f"{f.score:.2f}", color=colour, fontsize=7)
        for c in range(ncrop):
            ax = axes[r][1 + c]
            if c < len(ps):
                ax.imshow(ps[c].face)
                if ps[c].how == "aligned":
                    ax.plot(TEMPLATE[:, 0], TEMPLATE[:, 1], "+", ms=5, color="cyan")
                ax.set_title(f"112x112 ({ps[c].how})", fontsize=7)
            ax.axis("off")
        axes[r][0].axis("off")
    fig.tight_layout()
    with files.atomic(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Report

def _variants(img):
    """The astronaut's copies of the done-when list: name -> image."""
    from skimage.transform import rescale, rotate

    def u8(a):
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return {
        "original": img,
        "rotated +15": u8(rotate(img.astype(float), 15, resize=True, preserve_range=True)),
        "rotated -15": u8(rotate(img.astype(float), -15, resize=True, preserve_range=True)),
        "scaled 0.5": u8(rescale(img.astype(float), 0.5, channel_axis=2, preserve_range=True,
                                 anti_aliasing=True)),
        "scaled 2": u8(rescale(img.astype(float), 2, channel_axis=2, preserve_range=True)),
        "mirrored": img[:, ::-1].copy(),
    }


def report(artifact_dir, out: Path, log=print) -> dict:
    """Measure the done-when figures and write ``out/align.{json,md,png}``."""
    import time
    from skimage import data

    from .artifact import load
    from .faces import load as load_faces
    from .golden import GoldenModel

    det = detector()
    golden = GoldenModel(load(artifact_dir))
    variants = _variants(data.astronaut())
    prepared, rows = [], {}
    for name, img in variants.items():
        t = time.perf_counter()
        p = prepare(img, name, det=det)[0]
        rows[name] = {"image": list(img.shape[:2]), "faces": len(p.faces),
                      "box": [round(float(v), 1) for v in p.faces[0].box],
                      "score": round(p.faces[0].score, 4),
                      "landmarks": np.round(p.faces[0].landmarks, 1).tolist(),
                      "detect_align_seconds": round(time.perf_counter() - t, 3)}
        prepared.append(p)
        log(f"  {p.describe()}")
    emb = golden.run(np.stack([p.face for p in prepared])).embedding.astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for name, e in zip(rows, emb):
        rows[name]["cosine_to_original"] = round(float(e @ emb[0]), 4)
    ev = load_faces("evaluation")
    found = [len(det.detect(f)) for f in ev]
    shipped = {"faces": len(ev), "with_a_face_detected": int(sum(n > 0 for n in found)),
               "detections": int(sum(found)),
               "treatment": "112x112 crops pass unchanged (already aligned); detection is "
                            "only measured here"}
    rep = {"detector": "MTCNN (P/R/O-Net, facenet-pytorch 2.6.0 wheel weights), min face "
                       f"{MIN_FACE} px, thresholds {list(det.thresholds)}, pyramid factor "
                       f"{det.factor}",
           "template": TEMPLATE.tolist(), "artifact": str(artifact_dir),
           "astronaut": rows,
           "astronaut_cosine_min": min(r["cosine_to_original"] for r in rows.values()),
           "shipped_evaluation_faces": shipped,
           "alternatives": alternatives()}
    files.write_json(out / "align.json", rep)
    files.write_text(out / "align.md", markdown(rep))
    draw(prepared, list(variants.values()), out / "align.png", dpi=60)
    return rep


def alternatives() -> dict:
    """OpenCV's Haar cascades on the same astronaut copies, when opencv-python-headless is
    installed (it is not a dependency: this is the measured alternative)."""
    try:
        import cv2
        cv2.CascadeClassifier
    except (ImportError, AttributeError):      # OpenCV 5 no longer has the cascades
        return {"opencv": "not measured: needs opencv-python-headless 4.x (pip install "
                          "'opencv-python-headless<5'; 5.x has no CascadeClassifier)"}
    from skimage import data
    face = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    eyes = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    import time

    from .faces import load as load_faces

    def run(img):
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        boxes = face.detectMultiScale(grey, 1.1, 5, minSize=(MIN_FACE, MIN_FACE))
        n_eyes = 0
        if len(boxes):
            x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
            n_eyes = len(eyes.detectMultiScale(grey[y:y + h, x:x + w], 1.1, 5))
        return int(len(boxes)), int(n_eyes)
    out = {}
    for name, img in _variants(data.astronaut()).items():
        t = time.perf_counter()
        n, n_eyes = run(img)
        out[name] = {"faces": n, "eyes_in_largest_face": n_eyes,
                     "seconds": round(time.perf_counter() - t, 3)}
    ev = load_faces("evaluation")
    found = [run(f) for f in ev]
    return {"opencv": f"{cv2.__version__} haarcascade_frontalface_default + haarcascade_eye",
            "astronaut": out,
            "shipped_evaluation_faces": {
                "faces": len(ev), "with_a_face_detected": sum(n > 0 for n, _ in found),
                "with_two_eyes_found": sum(e == 2 for _, e in found)}}


def markdown(rep: dict) -> str:
    lines = ["# Face detection and alignment", "",
             f"Detector: {rep['detector']}. Aligned to the insightface 5-point 112x112 "
             "template. Embeddings: the golden model of "
             f"`{rep['artifact']}`, cosine of L2-normalised integer embeddings.", "",
             "## Astronaut (`skimage.data.astronaut()`)", "",
             "| copy | image | faces | score | cosine to original | seconds (detect + align) |",
             "|---|---|---|---|---|---|"]
    for name, r in rep["astronaut"].items():
        lines.append(f"| {name} | {r['image'][1]}x{r['image'][0]} | {r['faces']} | "
                     f"{r['score']:.4f} | {r['cosine_to_original']:.4f} | "
                     f"{r['detect_align_seconds']} |")
    s = rep["shipped_evaluation_faces"]
    lines += ["", f"Lowest cosine: {rep['astronaut_cosine_min']:.4f} (done when >= 0.9).", "",
              "## Shipped evaluation faces", "",
              f"{s['with_a_face_detected']} of {s['faces']} have a face detected "
              f"({s['detections']} detections in all); {s['treatment']}.", ""]
    alt = rep["alternatives"]
    if "astronaut" in alt:
        lines += ["## Alternative: OpenCV cascades", "", f"{alt['opencv']}:", "",
                  "| copy | faces | eyes in the largest face | seconds |", "|---|---|---|---|"]
        lines += [f"| {n} | {r['faces']} | {r['eyes_in_largest_face']} | {r['seconds']} |"
                  for n, r in alt["astronaut"].items()]
        se = alt["shipped_evaluation_faces"]
        lines += ["", f"Shipped evaluation faces: a face in {se['with_a_face_detected']} of "
                      f"{se['faces']}, both eyes in {se['with_two_eyes_found']}.", ""]
    else:
        lines += [f"OpenCV cascades: {alt['opencv']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    return cli.run(_main, argv, prog="python -m quant.align")


def _main(argv) -> int:
    ap = cli.ArgumentParser(prog="python -m quant.align", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--show", nargs="+", type=Path, metavar="PHOTO",
                    help="draw the detections and aligned crops of these photos instead of "
                         "writing the report")
    ap.add_argument("--show-out", type=Path, default=Path("build/align_show.png"),
                    help="picture of --show (default: %(default)s)")
    ap.add_argument("--every-face", action="store_true", help="--show: align every face")
    ap.add_argument("--artifact", type=Path, default=Path("build/quant/seesaw_shuffle"),
                    help="quantized artifact for the golden-model embeddings "
                         "(default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("reports"),
                    help="report folder (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.show:
        from .faces import read_image
        prepared, images = [], []
        for path in args.show:
            img = read_image(path)
            ps = prepare(img, str(path), every_face=args.every_face)
            for p in ps:
                print(p.describe())
            prepared += ps
            images.append(img)
        print(f"wrote {draw(prepared, images, args.show_out)}")
        return 0
    if not (args.artifact / "manifest.json").exists():
        raise UserError(str(args.artifact), "no quantized artifact (manifest.json); run "
                                            "`make quantize` first")
    rep = report(args.artifact, args.out)
    print(markdown(rep))
    print(f"wrote {args.out}/align.json, align.md, align.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
