"""Face detection (MTCNN on the facenet-pytorch wheel's weights) and alignment to the
insightface template (quant/align.py); image reading of every common mode (quant/faces.py)."""
import io
import struct
import zlib

import numpy as np
import pytest

from quant import align, faces


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="module")
def det():
    return align.detector()


def test_similarity_recovers_a_known_transform():
    th = np.deg2rad(17)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    src = align.TEMPLATE @ rot.T * 2.5 + [40, -7]
    m = align.similarity(src, align.TEMPLATE)
    back = (np.c_[src, np.ones(5)] @ m.T)[:, :2]
    assert np.abs(back - align.TEMPLATE).max() < 1e-9
    with pytest.raises(ValueError, match="degenerate"):
        align.similarity(np.ones((5, 2)), align.TEMPLATE)


def test_warp_with_template_landmarks_is_the_identity():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    assert np.array_equal(align.warp(img, align.TEMPLATE), img)


def test_astronaut_face_and_landmarks(astronaut, det):
    """One face, in the head (rows 20-150, cols 190-320 of the image, quant.faces's box), eyes
    above the nose above the mouth, the left-seen eye left of the right-seen one."""
    found = det.detect(astronaut)
    assert len(found) == 1 and found[0].score > 0.99
    f = found[0]
    x0, y0, x1, y1 = f.box
    assert 170 < x0 < x1 < 330 and 10 < y0 < y1 < 190
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = f.landmarks
    assert lx < nx < rx and mlx < mrx
    assert max(ly, ry) < ny < min(mly, mry)
    # Mirrored: the same face, its landmarks mirrored (left and right swap roles).
    g = det.detect(astronaut[:, ::-1].copy())[0]
    w = astronaut.shape[1]
    mirrored = np.abs((w - g.landmarks[[1, 0, 2, 4, 3], 0]) - f.landmarks[:, 0])
    assert mirrored.max() < 4 and np.abs(g.landmarks[[1, 0, 2, 4, 3], 1] -
                                         f.landmarks[:, 1]).max() < 4


def test_rotated_astronaut_aligns_to_the_same_face(astronaut, det):
    """The done-when check with the float model (the report measures the golden model):
    the crops of a copy rotated by 15 degrees and of the mirror image embed with cosine
    >= 0.9 to the crop of the original."""
    import torch
    from quant.reference_model import load_reference, weights_path
    from quant.zoo import preprocess
    variants = align._variants(astronaut)
    crops = [align.prepare(variants[k], k, det=det)[0] for k in ("original", "rotated +15",
                                                                  "mirrored")]
    assert all(c.how == "aligned" and c.face.shape == (112, 112, 3) for c in crops)
    model = load_reference("seesaw_shuffle", weights_path("seesaw_shuffle"))
    with torch.no_grad():
        e = model(preprocess(np.stack([c.face for c in crops]))).numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    cos = e[1:] @ e[0]
    assert np.all(cos >= 0.9), cos


def test_prepare_policy(astronaut, det):
    crop = astronaut[:112, :112].copy()
    (p,) = align.prepare(crop, "crop.png", det=det)
    assert p.how == "as given" and p.face is crop and "passed unchanged" in p.describe()
    (p,) = align.prepare(astronaut, "a.png", aligned=True, det=det)
    assert p.how == "forced" and p.face.shape == (112, 112, 3)
    (p,) = align.prepare(astronaut, "a.png", det=det)
    assert p.how == "aligned" and "1 face(s)" in p.describe() and "a.png" in p.describe()


def test_every_face_and_largest_first(astronaut, det):
    """Two astronauts side by side, one half the size: the larger first; every_face gives
    both."""
    from skimage.transform import rescale
    small = np.clip(np.rint(rescale(astronaut.astype(float), 0.5, channel_axis=2,
                                    preserve_range=True, anti_aliasing=True)), 0, 255)
    two = np.zeros((512, 768, 3), np.uint8)
    two[:, :512] = astronaut
    two[:256, 512:] = small.astype(np.uint8)
    ps = align.prepare(two, "two.png", every_face=True, det=det)
    assert len(ps) == 2 and ps[0].faces[0].area > 3 * ps[0].faces[1].area
    assert ps[0].faces[0].box[2] < 512 < ps[0].faces[1].box[0]
    assert len(align.prepare(two, "two.png", det=det)) == 1


def test_errors_name_the_image(det):
    with pytest.raises(align.FaceError, match=r"^blank.png: no face found"):
        align.prepare(np.full((200, 300, 3), 128, np.uint8), "blank.png", det=det)
    with pytest.raises(align.FaceError, match=r"^tiny.png: 15x12 pixels is too small"):
        align.prepare(np.zeros((12, 15, 3), np.uint8), "tiny.png", det=det)
    with pytest.raises(align.FaceError, match="odd.npy: expected an RGB uint8"):
        align.prepare(np.zeros((50, 50), np.float32), "odd.npy", det=det)


def test_draw_writes_a_picture(astronaut, det, tmp_path):
    ps = align.prepare(astronaut, "astronaut", det=det)
    out = align.draw(ps, [astronaut], tmp_path / "show.png")
    from skimage.io import imread
    assert imread(out).shape[0] > 100 and not list(tmp_path.glob("*.tmp*"))


# ----------------------------------------------------------------------------------------------
# Reading images of every common mode

def _png16_rgb(arr):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _encoded(img, mode, fmt):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).convert(mode).save(buf, fmt)
    return buf.getvalue()


def test_every_common_mode_reads_as_rgb(tmp_path):
    from PIL import Image
    yy, xx = np.mgrid[:20, :30]                 # smooth, so that JPEG keeps it close
    img = np.stack([xx * 8, yy * 12, 255 - xx * 4 - yy * 3], 2).astype(np.uint8)
    grey = np.asarray(Image.fromarray(img).convert("L"))
    cases = {
        "grey.png": (_encoded(img, "L", "PNG"), np.repeat(grey[..., None], 3, 2), 0),
        "grey_alpha.png": (_encoded(img, "LA", "PNG"), np.repeat(grey[..., None], 3, 2), 0),
        "rgba.png": (_encoded(img, "RGBA", "PNG"), img, 0),
        "palette.png": (_encoded(img, "P", "PNG"), None, 0),
        "cmyk.jpg": (_encoded(img, "CMYK", "JPEG"), img, 6),
        "rgb.jpg": (_encoded(img, "RGB", "JPEG"), img, 6),
        "rgb16.png": (_png16_rgb(img.astype(np.uint16) * 257), img, 0),
    }
    g16 = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 257).save(g16, "PNG")
    cases["grey16.png"] = (g16.getvalue(), np.repeat(grey[..., None], 3, 2), 0)
    for name, (data, want, tol) in cases.items():
        (tmp_path / name).write_bytes(data)
        got = faces.read_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (20, 30, 3), name
        if want is not None:
            err = np.abs(got.astype(int) - want).mean()
            assert err <= tol, (name, err)
    pal = faces.read_image(tmp_path / "palette.png")
    assert np.abs(pal.astype(int) - img).mean() < 25     # the 216-colour web palette


def test_transparency_is_composited_on_white(tmp_path):
    from PIL import Image
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255                    # top half opaque red, bottom half transparent
    Image.fromarray(rgba).save(tmp_path / "t.png")
    got = faces.read_image(tmp_path / "t.png")
    assert got[0, 0].tolist() == [200, 0, 0] and got[3, 3].tolist() == [255, 255, 255]


def test_unreadable_images_name_the_file_and_reason(tmp_path):
    (tmp_path / "fake.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(faces.ImageReadError, match=r"fake.png: not an image file"):
        faces.read_image(tmp_path / "fake.png")
    good = _encoded(np.zeros((64, 64, 3), np.uint8), "RGB", "JPEG")
    (tmp_path / "cut.jpg").write_bytes(good[:len(good) // 2])
    with pytest.raises(faces.ImageReadError, match=r"cut.jpg: cannot decode the image \("):
        faces.read_image(tmp_path / "cut.jpg")
    with pytest.raises(faces.ImageReadError, match=r"gone.png: no such file"):
        faces.read_image(tmp_path / "gone.png")
    np.save(tmp_path / "bad.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(faces.ImageReadError, match=r"bad.npy: expected a uint8"):
        faces.read_image(tmp_path / "bad.npy")
