"""The user's commands (firmware/run.py) and the host gallery (firmware/gallery.py).

Default tier: every command on the golden model (``--golden``: the integers the board
returns), the gallery's safety and every user error. Slow tier: ``verify --sim`` on two
photos through the whole board design in Verilator."""
import json

import numpy as np
import pytest

from firmware import run
from firmware.gallery import Gallery, GalleryError

THRESHOLD = "0.7"


@pytest.fixture(scope="module")
def artifact(seesaw_shuffle_artifact):
    """The session's quantized shipped seesaw_shuffle (tests/conftest.py)."""
    return seesaw_shuffle_artifact


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The astronaut photo, its mirror image, one shipped evaluation face (an aligned 112x112
    crop) and a photo without a face."""
    from PIL import Image
    from skimage import data

    from quant.faces import load

    def imsave(path, arr, **kw):
        Image.fromarray(np.ascontiguousarray(arr)).save(path, **kw)
    d = tmp_path_factory.mktemp("photos")
    a = data.astronaut()
    imsave(d / "astronaut.jpg", a, quality=92)
    imsave(d / "mirror.png", a[:, ::-1])
    imsave(d / "lfw.png", load("evaluation")[0])
    imsave(d / "wall.png", np.full((120, 160, 3), 90, np.uint8))
    imsave(d / "tiny.png", np.full((10, 14, 3), 90, np.uint8))
    (d / "fake.jpg").write_bytes(b"not a jpeg")
    return d


def cli(capsys, *argv):
    rc = run.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_verify_same_and_different(capsys, artifact, photos, tmp_path):
    rc, out, err = cli(capsys, "verify", photos / "astronaut.jpg", photos / "mirror.png",
                       "--golden", "--artifact", artifact, "--threshold", THRESHOLD,
                       "--show", tmp_path / "show.png")
    assert rc == 0, err
    assert "astronaut.jpg: 512x512, 1 face(s); aligned" in out and "eyes at" in out
    assert "SAME person" in out and (tmp_path / "show.png").exists()
    # The default threshold is the one in the artifact's quantizer report.
    import shutil
    art = tmp_path / "art"
    art.mkdir()
    for f in ("manifest.json", "model.npz"):
        shutil.copy(artifact / f, art / f)
    (art / "report.json").write_text(json.dumps({"decisions": {"float_eer_threshold": 0.7}}))
    rc, out, err = cli(capsys, "verify", photos / "astronaut.jpg", photos / "lfw.png",
                       "--golden", "--artifact", art)
    assert rc == 0 and "lfw.png: already an aligned 112x112 crop, passed unchanged" in out
    assert "DIFFERENT people (threshold 0.7000, the artifact's float equal-error" in out


def test_enroll_identify_remove(capsys, artifact, photos, tmp_path):
    g = tmp_path / "people.json"
    common = ["--golden", "--artifact", artifact]
    rc, out, err = cli(capsys, "enroll", "astronaut", photos / "astronaut.jpg", "--gallery", g,
                       *common)
    assert rc == 0 and "enrolled 'astronaut': 1 new embedding(s)" in out, err
    rc, out, err = cli(capsys, "enroll", "lfw0", photos / "lfw.png", "--gallery", g, *common)
    assert rc == 0, err
    gal = Gallery.open(g)
    assert sorted(gal.people) == ["astronaut", "lfw0"] and gal.artifact == run.artifact_id(
        artifact)
    rc, out, err = cli(capsys, "identify", photos / "mirror.png", "--gallery", g,
                       "--threshold", THRESHOLD, *common)
    assert rc == 0 and "mirror.png: 'astronaut', cosine" in out, err
    rc, out, err = cli(capsys, "identify", photos / "mirror.png", "--name", "lfw0",
                       "--gallery", g, "--threshold", THRESHOLD, *common)
    assert rc == 0 and "is NOT 'lfw0'" in out, err
    rc, out, err = cli(capsys, "list", "--gallery", g)
    assert rc == 0 and "astronaut: 1 embedding(s)" in out and "2 people" in out
    rc, out, err = cli(capsys, "remove", "lfw0", "--gallery", g)
    assert rc == 0 and list(Gallery.open(g).people) == ["astronaut"]


def test_user_errors_are_one_line_naming_the_culprit(capsys, artifact, photos, tmp_path):
    g = tmp_path / "g.json"
    cases = [
        (["verify", photos / "wall.png", photos / "lfw.png", "--golden"], "wall.png: no face"),
        (["verify", photos / "tiny.png", photos / "lfw.png", "--golden"],
         "tiny.png: 14x10 pixels is too small to hold a face"),
        (["verify", photos / "fake.jpg", photos / "lfw.png", "--golden"],
         "fake.jpg: not an image file"),
        (["verify", photos / "gone.jpg", photos / "lfw.png", "--golden"], "gone.jpg: no such"),
        (["verify", photos / "lfw.png", photos / "lfw.png", "--port", tmp_path / "ttyNONE"],
         "cannot open serial port"),
        (["identify", photos / "lfw.png", "--gallery", g, "--golden"], "g.json: no gallery"),
        (["remove", "nobody", "--gallery", g], "g.json: no gallery"),
    ]
    Gallery(g).save()
    cases += [(["remove", "nobody", "--gallery", g], "g.json: unknown name 'nobody'"),
              (["identify", photos / "lfw.png", "--name", "x", "--gallery", g, "--golden"],
               "g.json: unknown name 'x' (enrolled: nobody)")]
    for argv, want in cases[:5] + cases[7:]:
        argv = argv + (["--artifact", artifact] if "--golden" in argv else [])
        rc, out, err = cli(capsys, *argv)
        assert rc == 2 and err.startswith("python -m firmware.run: error: ") and want in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    g.unlink()
    for argv, want in cases[5:7]:
        rc, out, err = cli(capsys, *argv)
        assert rc == 2 and want in err, (argv, err)


def test_shipped_threshold(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(
        {"decisions": {"float_eer_threshold": 0.76}}))
    assert run.shipped_threshold(tmp_path) == 0.76
    (tmp_path / "report.json").write_text(json.dumps({"decisions": None}))
    with pytest.raises(run.UserError, match="report.json: no decisions.float_eer_threshold"):
        run.shipped_threshold(tmp_path)


def test_corrupt_gallery_is_named_and_never_replaced(capsys, artifact, photos, tmp_path):
    g = tmp_path / "g.json"
    for text, why in [("{not json", "not readable JSON"),
                      ('{"format": "other"}', 'no "format"'),
                      ('{"format": "seesaw-gallery", "version": 1, "artifact": null, '
                       '"people": {"a": [[1, 2], [3]]}}', "embedding of 1 values"),
                      ('{"format": "seesaw-gallery", "version": 1, "artifact": null, '
                       '"people": {"a": [[1, 99999]]}}', "not a list of 16-bit")]:
        g.write_text(text)
        with pytest.raises(GalleryError, match=why):
            Gallery.open(g)
        rc, out, err = cli(capsys, "enroll", "x", photos / "lfw.png", "--gallery", g,
                           "--golden", "--artifact", artifact)
        assert rc == 2 and f"{g}: corrupt gallery" in err and g.read_text() == text


def test_interrupted_save_leaves_the_old_gallery(tmp_path, monkeypatch):
    g = Gallery(tmp_path / "g.json")
    g.enroll("a", np.arange(8)[None], "sha")
    g.save()
    before = (tmp_path / "g.json").read_bytes()
    g.enroll("b", np.ones((1, 8), int), "sha")

    def die_before_the_rename(src, dst):    # the new gallery is written, not yet in place
        assert b'"b"' in open(src, "rb").read()
        raise KeyboardInterrupt
    monkeypatch.setattr("quant.files.os.replace", die_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        g.save()
    assert (tmp_path / "g.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]
    assert list(Gallery.open(tmp_path / "g.json").people) == ["a"]


def test_gallery_refuses_another_models_embeddings(tmp_path):
    g = Gallery(tmp_path / "g.json")
    g.enroll("a", np.arange(8)[None], "model-one")
    with pytest.raises(GalleryError, match="enrolled with another model"):
        g.enroll("b", np.arange(8)[None], "model-two")


@pytest.mark.slow
def test_verify_on_the_simulated_board(capsys, artifact, photos):
    """``verify a b --sim``: the two aligned faces through the whole ulx3s board design in
    Verilator; the cosine printed is that of the golden model's integers, which the board
    returns bit for bit.

    Measured (2026-12-03, 2-core x86_64 at load 20-25): ``verify astronaut.jpg other.jpg
    --sim`` (other.jpg: the astronaut mirrored and rotated by 10 degrees) 43 min wall, 14.5
    min CPU: 17,995,419 cycles running for the two faces, both embeddings equal to the golden
    model's on the same aligned faces, "cosine +0.9570: SAME person (threshold 0.7662)"."""
    rc, out, err = cli(capsys, "verify", photos / "astronaut.jpg", photos / "mirror.png",
                       "--sim", "--artifact", artifact, "--threshold", THRESHOLD)
    assert rc == 0, err
    assert "simulating the ulx3s board design" in out and "SAME person" in out
    rc2, gold, _ = cli(capsys, "verify", photos / "astronaut.jpg", photos / "mirror.png",
                       "--golden", "--artifact", artifact, "--threshold", THRESHOLD)
    cos = [line.split()[1] for line in (out + gold).splitlines() if line.startswith("cosine")]
    assert len(cos) == 2 and cos[0] == cos[1], cos
