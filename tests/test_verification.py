import io
import pickle
import pickletools

import numpy as np
import pytest

from quant import faces as face_set
from quant import verification as v


@pytest.fixture(scope="module")
def evaluation_faces():
    return face_set.load("evaluation")


# ---------------------------------------------------------------------------------- .bin files

def test_bin_round_trip_with_shipped_faces(tmp_path, evaluation_faces):
    images = evaluation_faces[:8]
    issame = np.array([True, False, True, False])
    path = tmp_path / "small.bin"
    v.write_bin(path, images, issame)
    got, got_same = v.read_bin(path)
    assert got.dtype == np.uint8 and got.shape == (8, 112, 112, 3)
    np.testing.assert_array_equal(got, images)            # PNG is lossless
    assert got_same.dtype == bool
    np.testing.assert_array_equal(got_same, issame)
    got, got_same = v.read_bin(path, limit=2)
    assert got.shape[0] == 4 and list(got_same) == [True, False]


def _iio_bytes(img, ext):
    import imageio.v3 as iio
    return iio.imwrite("<bytes>", img, extension=ext)


def test_read_bin_like_insightface_jpeg_grey_and_protocol2(tmp_path, evaluation_faces):
    """JPEG entries, a grey PNG, and a protocol-2 pickle (bytes via _codecs.encode)."""
    rgb = evaluation_faces[-1]                               # the astronaut, in colour
    grey = evaluation_faces[0][..., 0]
    bins = [_iio_bytes(rgb, ".jpg"), _iio_bytes(grey, ".png")]
    path = tmp_path / "p2.bin"
    with open(path, "wb") as f:
        pickle.dump((bins, [np.bool_(True)]), f, protocol=2)
    ops = {op.name for op, _, _ in pickletools.genops(path.read_bytes())}
    assert "GLOBAL" in ops                                   # really exercises find_class
    images, issame = v.read_bin(path)
    assert images.shape == (2, 112, 112, 3) and issame.tolist() == [True]
    assert np.abs(images[0].astype(int) - rgb).mean() < 6    # JPEG is lossy, but close
    np.testing.assert_array_equal(images[1], np.repeat(grey[..., None], 3, axis=2))


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_malicious_pickle(tmp_path):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([_Evil(), b"x"], [True]), protocol=2))
    with pytest.raises(v.BinFormatError, match=r"evil\.bin.*refusing to unpickle (posix|os|nt)\.system"):
        v.read_bin(path)


def test_restricted_unpickler_refuses_numpy_arrays_of_objects(tmp_path):
    path = tmp_path / "arr.bin"
    path.write_bytes(pickle.dumps((np.zeros(2), [True])))
    with pytest.raises(v.BinFormatError, match="refusing to unpickle"):
        v.read_bin(path)


def test_read_bin_error_paths(tmp_path, evaluation_faces):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        v.read_bin(tmp_path / "missing.bin")

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00 this is not a pickle")
    with pytest.raises(v.BinFormatError, match="garbage.bin"):
        v.read_bin(garbage)

    png = _iio_bytes(evaluation_faces[0], ".png")
    counts = tmp_path / "counts.bin"
    counts.write_bytes(pickle.dumps(([png, png, png], [True, False])))
    with pytest.raises(v.BinFormatError, match=r"counts\.bin: 3 images for 2 pairs"):
        v.read_bin(counts)

    bad = tmp_path / "badimg.bin"
    bad.write_bytes(pickle.dumps(([png, png, png, b"not an image"], [True, False])))
    with pytest.raises(v.BinFormatError, match=r"badimg\.bin: entry 3: cannot decode"):
        v.read_bin(bad)

    small = _iio_bytes(evaluation_faces[0][:100, :90], ".png")
    size = tmp_path / "size.bin"
    size.write_bytes(pickle.dumps(([png, small], [True])))
    with pytest.raises(v.BinFormatError, match=r"size\.bin: entry 1: image is 100x90"):
        v.read_bin(size)
    images, _ = v.read_bin(size, resize=True)
    assert images.shape == (2, 112, 112, 3)

    notbool = tmp_path / "notbool.bin"
    notbool.write_bytes(pickle.dumps(([png, png], ["yes"])))
    with pytest.raises(v.BinFormatError, match=r"notbool\.bin: issame entry 0"):
        v.read_bin(notbool)

    shape = tmp_path / "shape.bin"
    shape.write_bytes(pickle.dumps([png, png, png]))
    with pytest.raises(v.BinFormatError, match=r"shape\.bin: expected a pickled pair"):
        v.read_bin(shape)


def test_write_bin_checks_counts(tmp_path, evaluation_faces):
    with pytest.raises(ValueError, match="3 images for 2 pairs"):
        v.write_bin(tmp_path / "x.bin", evaluation_faces[:3], [True, False])


# --------------------------------------------------------------------------------- shipped pairs

def test_all_pairs_cover_every_face_against_every_copy(evaluation_faces):
    faces = evaluation_faces[:5]
    copies, issame = v.all_pairs(faces, seed=1)
    assert copies.shape == faces.shape and issame.shape == (5, 5)
    assert np.array_equal(issame, np.eye(5, dtype=bool))
    assert not any(np.array_equal(c, f) for c, f in zip(copies, faces))
    np.testing.assert_array_equal(copies, v.all_pairs(faces, seed=1)[0])
    with pytest.raises(ValueError, match="uint8"):
        v.all_pairs(faces.astype(np.float32))


def test_shipped_pairs_balanced_deterministic(evaluation_faces):
    faces = evaluation_faces[:10]
    a, b, issame = v.shipped_pairs(faces, seed=3)
    assert a.shape == b.shape == (20, 112, 112, 3) and a.dtype == b.dtype == np.uint8
    assert issame.sum() == 10 and (~issame).sum() == 10
    a2, b2, s2 = v.shipped_pairs(faces, seed=3)
    np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(issame, s2)
    _, b3, _ = v.shipped_pairs(faces, seed=4)
    assert not np.array_equal(b, b3)
    for img_a, img_b, same in zip(a, b, issame):
        # images a are untouched shipped faces; b is always a perturbed copy (never identical)
        assert any(np.array_equal(img_a, f) for f in faces)
        assert not np.array_equal(img_a, img_b)
    # a "different" pair never pairs a face with itself
    idx = lambda img: next(i for i, f in enumerate(faces) if np.array_equal(img, f))
    firsts = [idx(img) for img in a[~issame]]
    assert sorted(firsts) == list(range(10))


def test_perturbed_copy_is_closer_than_another_face(evaluation_faces):
    a, b, issame = v.shipped_pairs(evaluation_faces[:10], seed=0)
    # Compare on a flip-invariant blurred grey version: same pairs must look more alike.
    def feat(x):
        g = x.astype(float).mean(-1)
        g = g + g[:, :, ::-1]
        return g.reshape(len(g), 14, 8, 14, 8).mean((2, 4)).reshape(len(g), -1)
    fa, fb = feat(a), feat(b)
    fa -= fa.mean(1, keepdims=True)
    fb -= fb.mean(1, keepdims=True)
    cos = np.sum(fa * fb, 1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert cos[issame].mean() > cos[~issame].mean() + 0.2


# ---------------------------------------------------------------------------------------- metrics

def test_kfold_perfectly_separable_is_100_percent():
    rng = np.random.default_rng(0)
    issame = rng.random(600) < 0.5
    scores = np.where(issame, rng.uniform(0.5, 0.9, 600), rng.uniform(-0.3, 0.3, 600))
    r = v.kfold_accuracy(scores, issame, folds=10)
    assert r["mean"] == 1.0 and r["std"] == 0.0
    assert len(r["accuracies"]) == 10 and len(r["thresholds"]) == 10
    lowest_same = scores[issame].min()
    assert all(0.3 <= t < lowest_same for t in r["thresholds"])


def test_kfold_random_scores_near_chance():
    rng = np.random.default_rng(1)
    issame = rng.random(6000) < 0.5
    scores = rng.uniform(-1, 1, 6000)
    r = v.kfold_accuracy(scores, issame, folds=10)
    assert 0.46 < r["mean"] < 0.54
    assert r["std"] > 0


def test_kfold_known_small_case_and_held_out_threshold():
    # 4 folds of 2 pairs; fold 0 is mislabelled relative to the others, so its held-out
    # threshold (learned on folds 1-3) must get it wrong: accuracy 0 there, 1 elsewhere.
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.8, 0.2, 0.8, 0.2])
    issame = np.array([True, False, True, False, True, False, True, False])
    r = v.kfold_accuracy(scores, issame, folds=4)
    assert r["accuracies"] == [0.0, 1.0, 1.0, 1.0]
    assert r["mean"] == 0.75
    assert r["std"] == pytest.approx(np.std([0, 1, 1, 1]))
    # insightface tie rule: the largest cosine threshold (smallest distance) of the best ones
    assert r["thresholds"][1:] == pytest.approx([0.795] * 3)
    assert 0.2 <= r["thresholds"][0] < 0.8


def test_insightface_grid_is_distance_grid():
    t = v.insightface_thresholds()
    assert len(t) == 400 and t[0] == 1.0 and t[-1] == pytest.approx(1 - 3.99 / 2)


def test_eer_threshold_known_cases():
    same = [0.6, 0.7, 0.8, 0.9]
    diff = [0.1, 0.2, 0.3, 0.4]
    scores = np.array(same + diff)
    issame = np.array([True] * 4 + [False] * 4)
    assert v.eer_threshold(scores, issame) == pytest.approx(0.5)
    assert v.equal_error(scores, issame)["eer"] == 0.0
    # Overlap: one same pair below one different pair -> EER 1/4 at the threshold between.
    scores = np.array([0.35, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.6])
    eq = v.equal_error(scores, issame)
    assert eq["eer"] == pytest.approx(0.25)
    assert eq["far"] == eq["frr"] == pytest.approx(0.25)
    assert 0.35 < eq["threshold"] < 0.6


def test_metric_errors():
    with pytest.raises(ValueError, match="3 scores for 2"):
        v.kfold_accuracy([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="folds"):
        v.kfold_accuracy([0.1, 0.2, 0.3], [True, False, True], folds=10)
    with pytest.raises(ValueError, match="both kinds"):
        v.eer_threshold([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="non-finite"):
        v.eer_threshold([0.1, np.nan], [True, False])


# ------------------------------------------------------------------------------------- evaluate

def test_evaluate_flip_and_known_embedder(evaluation_faces):
    faces = evaluation_faces[:20]
    a, b, issame = v.shipped_pairs(faces, seed=0)
    calls = []

    def embed(x):      # mean colour of 16x16 blocks of a flip-symmetrised face, centred
        calls.append(len(x))
        g = x.astype(float).mean(-1)
        g = g.reshape(len(x), 7, 16, 7, 16).mean((2, 4)).reshape(len(x), -1)
        return g - g.mean(1, keepdims=True)

    r = v.evaluate(embed, (a, b), issame, folds=5, batch=16)
    assert r["pairs"] == 40 and r["same_pairs"] == 20 and r["folds"] == 5
    assert sum(calls) == 2 * 80                               # each image twice (flip test)
    assert r["embeddings"].shape == (80, 49)
    np.testing.assert_allclose(np.linalg.norm(r["embeddings"], axis=1), 1.0)
    assert r["same_score_mean"] > r["diff_score_mean"]
    assert r["accuracy_mean"] > 0.8
    assert 0 <= r["eer"] < 0.25
    s = v.summary(r)
    assert "scores" not in s and "embeddings" not in s
    import json
    json.dumps(s)
    calls.clear()
    r2 = v.evaluate(embed, v.interleave(a, b), issame, folds=5, flip=False)
    assert sum(calls) == 80 and r2["flip"] is False


def test_evaluate_checks_embedder_and_counts(evaluation_faces):
    images = evaluation_faces[:4]
    with pytest.raises(ValueError, match="4 images for 3 pairs"):
        v.evaluate(lambda x: np.ones((len(x), 2)), images, [True, False, True])
    with pytest.raises(ValueError, match="embed_fn returned shape"):
        v.evaluate(lambda x: np.ones(len(x)), images, [True, False], folds=2)


def test_artifact_folder_without_manifest_is_named(tmp_path):
    from quant.artifact import ArtifactError
    with pytest.raises(ArtifactError, match="manifest.json"):
        v.golden_embedder(tmp_path)

