"""The shipped face set and image loading."""
import numpy as np
import pytest
from skimage.io import imsave

from quant import faces


def test_shipped_sets():
    cal, ev = faces.load("calibration"), faces.load("evaluation")
    assert cal.shape == (50, 112, 112, 3) and ev.shape == (51, 112, 112, 3)
    assert cal.dtype == ev.dtype == np.uint8
    # held out: no evaluation face is a calibration face
    assert not any((ev[:, None] == cal[None]).all((2, 3, 4)).any(1))
    assert ev[-1].std(axis=2).mean() > 5, "the astronaut is in colour"


def test_preparation_reproduces_the_shipped_files():
    cal, ev = faces.prepare()
    assert np.array_equal(cal, faces.load("calibration"))
    assert np.array_equal(ev, faces.load("evaluation"))


def test_unknown_split():
    with pytest.raises(ValueError, match="'train'"):
        faces.load("train")


def test_load_images_from_folder_and_npy(tmp_path):
    ev = faces.load("evaluation")[:3]
    for i, f in enumerate(ev):
        imsave(tmp_path / f"{i}.png", f)
    from skimage import data
    imsave(tmp_path / "photo.png", data.astronaut())       # a photo: its face is aligned
    got = faces.load_images(tmp_path)
    assert got.shape == (4, 112, 112, 3) and np.array_equal(got[:3], ev)
    from quant.align import prepare
    assert np.array_equal(got[3], prepare(data.astronaut(), "photo")[0].face)
    forced = faces.load_images(tmp_path, aligned=True)     # taken as aligned: only resized
    assert np.array_equal(forced[:3], ev) and not np.array_equal(forced[3], got[3])
    np.save(tmp_path / "x.npy", ev)
    assert np.array_equal(faces.load_images(tmp_path / "x.npy", count=2), ev[:2])


def test_load_images_errors(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="bad.npy"):
        faces.load_images(tmp_path / "bad.npy")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(ValueError, match="broken.png: not an image file"):
        faces.load_images(tmp_path)
    (tmp_path / "broken.png").unlink()
    imsave(tmp_path / "wall.png", np.full((80, 90, 3), 90, np.uint8))
    with pytest.raises(ValueError, match="wall.png: no face found"):
        faces.load_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        faces.load_images(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        faces.load_images(empty)
