"""The face set that ships with the project, and its preparation.

Real faces from scikit-image's bundled data: the 100 LFW face crops of ``lfw_subset()``
(25x25 grey, upscaled bicubically to 112x112 and repeated on R, G, B) and the astronaut's face
cropped from ``astronaut()`` (colour). The first 50 LFW faces are the *calibration* set (the
quantizer calibrates on them and the reference model is trained on them); the other 50 and the
astronaut are the *evaluation* set, never seen in training or calibration.

    python -m quant.faces            # rebuilds data/faces/*.npy and a montage PNG

Files: ``data/faces/calibration.npy`` (50, 112, 112, 3) and ``data/faces/evaluation.npy``
(51, 112, 112, 3), uint8 RGB NHWC.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from . import cli, files
from .cli import UserError

FACE_DIR = Path(__file__).resolve().parent.parent / "data" / "faces"
SIZE = 112
# Square around the astronaut's face in skimage.data.astronaut() (rows, cols), chosen by eye
# with the same margin around the face as the LFW crops have.
ASTRONAUT_BOX = (20, 190, 150, 320)


def _resize(img: np.ndarray) -> np.ndarray:
    from skimage.transform import resize
    out = resize(img.astype(np.float64), (SIZE, SIZE), order=3, anti_aliasing=True,
                 preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def grey_to_rgb112(grey: np.ndarray) -> np.ndarray:
    """A grey image in [0, 1] -> 112x112 RGB uint8."""
    return _resize(np.repeat((grey * 255)[..., None], 3, axis=2))


def prepare():
    """Return ``(calibration, evaluation)`` uint8 arrays built from scikit-image's data."""
    from skimage import data
    lfw = data.lfw_subset()[:100]                     # first 100 are faces, the rest are not
    faces = np.stack([grey_to_rgb112(f) for f in lfw])
    r0, r1, c0, c1 = ASTRONAUT_BOX
    astronaut = _resize(data.astronaut()[r0:r1, c0:c1])
    return faces[:50], np.concatenate([faces[50:], astronaut[None]])


def load(split: str) -> np.ndarray:
    """The shipped ``calibration`` or ``evaluation`` faces, uint8 (N, 112, 112, 3)."""
    if split not in ("calibration", "evaluation"):
        raise ValueError(f"split must be 'calibration' or 'evaluation', not {split!r}")
    path = FACE_DIR / f"{split}.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m quant.faces` to rebuild it")
    return np.load(path)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


class ImageReadError(UserError, ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


def decode_image(data, source="image") -> np.ndarray:
    """Encoded image bytes (or a path) -> RGB uint8 (H, W, 3), whatever the file's mode: grey,
    grey+alpha, RGB(A), palette, 16-bit grey or colour, CMYK (JPEG included), with the EXIF
    orientation of phone pictures applied. Transparency is composited on white. Raises
    :class:`ImageReadError` naming ``source`` and the reason."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
                grey = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and
                                                               "transparency" in im.info):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageReadError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{source}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{source}: not an image file of a known format (PNG, JPEG, BMP, "
                             f"TIFF, GIF, WebP)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{source}: cannot decode the image ({e})") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{source}: {e}") from None


def read_image(path) -> np.ndarray:
    """An image file -> RGB uint8 (H, W, 3); see :func:`decode_image`. ``.npy`` files hold
    one uint8 (H, W, 3) or (H, W) array."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            img = np.load(path)
        except (OSError, ValueError) as e:
            raise ImageReadError(f"{path}: cannot read the array ({e})") from None
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ImageReadError(f"{path}: expected a uint8 (H, W, 3) image, got {img.dtype} "
                                 f"{img.shape}")
        return img
    return decode_image(path, str(path))


def load_images(source, count=None, *, aligned=False, every_face=False) -> np.ndarray:
    """Faces from an ``.npy`` of uint8 (N, 112, 112, 3) (taken as aligned crops) or a folder of
    photos (PNG, JPEG, ...; every mode :func:`decode_image` reads), each through
    :func:`quant.align.prepare`: 112x112 crops pass unchanged, other images have their largest
    face (``every_face``: all) detected and aligned; ``aligned=True`` only resizes. Errors
    name the offending file."""
    source = Path(source)
    if source.suffix == ".npy":
        arr = np.load(source)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (SIZE, SIZE, 3):
            raise ValueError(f"{source}: expected uint8 (N, {SIZE}, {SIZE}, 3), "
                             f"got {arr.dtype} {arr.shape}")
    elif source.is_dir():
        from .align import prepare
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in folder")
        imgs = []
        for f in files:
            if count and len(imgs) >= count:
                break
            imgs += [p.face for p in prepare(read_image(f), str(f), aligned=aligned,
                                             every_face=every_face)]
        arr = np.stack(imgs)
    else:
        raise FileNotFoundError(f"{source}: not an .npy file or a folder of images")
    return arr[:count] if count else arr


def main(argv=None):
    return cli.run(_main, argv, prog="python -m quant.faces")


def _main(argv):
    ap = cli.ArgumentParser(prog="python -m quant.faces", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=FACE_DIR, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        raise cli.UserError(f"--out {args.out}", "exists and is not a folder")
    cal, ev = prepare()
    for name, arr in (("calibration.npy", cal), ("evaluation.npy", ev)):
        with files.atomic(args.out / name) as tmp:
            np.save(tmp, arr)
    from skimage.io import imsave
    montage = np.concatenate([np.concatenate(list(s[:10]), axis=1) for s in (cal, ev[-10:])])
    with files.atomic(args.out / "montage.png") as tmp:
        imsave(tmp, montage, check_contrast=False)
    print(f"wrote {len(cal)} calibration and {len(ev)} evaluation faces to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
