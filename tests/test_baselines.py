"""The NumPy hashing baselines: lsh, pcah, itq (semhash.models.baselines)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from semhash.errors import ModelError
from semhash.inference import Hasher
from semhash.models import build_model, get_kind
from semhash.models.baselines import ITQHashModel, LSHHashModel, PCAHashModel, itq_rotation

KINDS = ("lsh", "pcah", "itq")
DIGITS_SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)[..., None]
    return images, d.target.astype(np.int64)


@pytest.fixture(scope="module")
def fitted(digits):
    images, labels = digits
    return {kind: build_model(kind, {"input_shape": DIGITS_SHAPE, "bits": 16}).fit(images) for kind in KINDS}


def test_registry_entries():
    assert get_kind("lsh") is LSHHashModel
    assert get_kind("pcah") is PCAHashModel
    assert get_kind("itq") is ITQHashModel
    for kind in KINDS:
        cls = get_kind(kind)
        assert cls.kind == kind
        assert cls.uses_tensorflow is False and cls.needs_labels is False
        assert cls.description
        assert {"input_shape", "bits", "seed"} <= set(cls.param_names())
    assert "itq_iterations" in ITQHashModel.param_names()
    assert ITQHashModel().itq_iterations == 50


def test_get_params_and_unknown_option():
    model = build_model("itq", {"bits": 12, "itq_iterations": 7})
    assert model.get_params() == {"input_shape": (28, 28, 1), "bits": 12, "seed": 0, "itq_iterations": 7}
    with pytest.raises(ModelError):
        build_model("lsh", {"itq_iterations": 3})


def test_no_tensorflow_imported(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import semhash.models.baselines
        from semhash.models import build_model, get_kind
        from semhash.inference import Hasher
        rng = np.random.default_rng(0)
        x = rng.random((300, 8, 8, 1), dtype=np.float32)
        for kind in ("lsh", "pcah", "itq"):
            m = build_model(kind, {{"input_shape": (8, 8, 1), "bits": 12}}).fit(x)
            h = m.export_hasher()
            h.save(r"{tmp_path}" + "/" + kind + ".npz")
            m.save(r"{tmp_path}" + "/" + kind)
            m2 = get_kind(kind).load(r"{tmp_path}" + "/" + kind)
            assert (Hasher.load(r"{tmp_path}" + "/" + kind + ".npz").hash(x) == m2.hash(x)).all()
        bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "jax", "torch"))
        print("IMPORTED:", bad)
        assert not bad, bad
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IMPORTED: []" in proc.stdout


# --------------------------------------------------------------------------- ITQ
def test_itq_rotation_orthogonal_and_loss_non_increasing():
    rng = np.random.default_rng(3)
    v = rng.standard_normal((2000, 12)) @ rng.standard_normal((12, 12))
    rotation, losses = itq_rotation(v, iterations=50, seed=1)
    assert rotation.shape == (12, 12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(12), atol=1e-10)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(12), atol=1e-10)
    assert len(losses) == 51
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    assert losses[-1] < losses[0]
    # the reported loss is the quantisation loss of the final rotation
    z = v @ rotation
    b = np.where(z >= 0, 1.0, -1.0)
    assert np.isclose(losses[-1], np.sum((b - z) ** 2))


def test_itq_model_on_digits(fitted):
    model = fitted["itq"]
    losses = model.quantization_loss_
    assert len(losses) == 51 and np.all(np.diff(losses) <= 1e-9 * losses[0]) and losses[-1] < losses[0]
    np.testing.assert_allclose(model.rotation_ @ model.rotation_.T, np.eye(16), atol=1e-10)
    # the projection is PCA followed by the rotation
    np.testing.assert_allclose(model.projection_, (model.pca_components_.T @ model.rotation_).astype(np.float32), atol=1e-6)
    # rotating PCA codes cannot change the PCA subspace
    pcah = fitted["pcah"]
    np.testing.assert_allclose(np.abs(pcah.projection_), np.abs(model.pca_components_.T), atol=1e-5)
    summary = model.summary_metrics()
    assert summary["quantization_loss_end"] < summary["quantization_loss_start"]
    assert model.history_["quantization_loss"] == list(losses)


def test_itq_zero_iterations_keeps_random_rotation(digits):
    images, _ = digits
    model = ITQHashModel(input_shape=DIGITS_SHAPE, bits=8, itq_iterations=0).fit(images)
    assert len(model.quantization_loss_) == 1
    np.testing.assert_allclose(model.rotation_ @ model.rotation_.T, np.eye(8), atol=1e-10)


def test_itq_beats_lsh_on_digits(digits):
    """A known qualitative result: ITQ codes retrieve same-class digits far better than
    random hyperplanes at 16 bits (mAP about 0.6 vs 0.35)."""
    from semhash import metrics

    images, labels = digits
    db, q = slice(0, 1400), slice(1400, None)
    scores = {}
    for kind in ("lsh", "itq"):
        h = build_model(kind, {"input_shape": DIGITS_SHAPE, "bits": 16}).fit(images[db]).export_hasher()
        scores[kind] = metrics.mean_average_precision(h.hash(images[q]), labels[q], h.hash(images[db]), labels[db], 16)
    assert scores["itq"] > scores["lsh"] + 0.1, scores


# --------------------------------------------------------------------------- PCAH
def test_pcah_splits_on_the_dominant_direction():
    rng = np.random.default_rng(0)
    d, n = 20, 600
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    t = rng.standard_normal(n) * 10.0
    x = 0.5 + t[:, None] * direction[None, :] + 0.1 * rng.standard_normal((n, d))
    model = PCAHashModel(input_shape=(4, 5, 1), bits=3).fit(x.reshape(n, 4, 5, 1))
    first = model.projection_[:, 0].astype(np.float64)
    assert abs(first @ direction) / np.linalg.norm(first) > 0.999
    bit0 = model.hash_bits(x.reshape(n, 4, 5, 1))[:, 0].astype(bool)
    side = t > t.mean()  # PCA hashing splits at the data mean
    agreement = max(np.mean(bit0 == side), np.mean(bit0 != side))
    assert agreement > 0.99
    assert model.summary_metrics()["explained_variance"] > 0.95


def test_pcah_too_many_bits(digits):
    images, _ = digits
    with pytest.raises(ModelError, match="principal components"):
        PCAHashModel(input_shape=(2, 2, 1), bits=5).fit(images[:, :2, :2])
    with pytest.raises(ModelError, match="principal components"):
        ITQHashModel(input_shape=DIGITS_SHAPE, bits=40).fit(images[:30])


# --------------------------------------------------------------------------- LSH
def test_lsh_seeded_reproducible(digits):
    images, _ = digits
    a = LSHHashModel(input_shape=DIGITS_SHAPE, bits=24, seed=5).fit(images)
    b = LSHHashModel(input_shape=DIGITS_SHAPE, bits=24, seed=5).fit(images)
    c = LSHHashModel(input_shape=DIGITS_SHAPE, bits=24, seed=6).fit(images)
    np.testing.assert_array_equal(a.projection_, b.projection_)
    np.testing.assert_array_equal(a.hash(images), b.hash(images))
    assert not np.array_equal(a.hash(images), c.hash(images))
    # hyperplanes through the mean: every bit splits the data, none is constant
    balance = a.hash_bits(images).mean(axis=0)
    assert np.all((balance > 0.05) & (balance < 0.95))


# --------------------------------------------------------------------------- export / persistence
@pytest.mark.parametrize("kind", KINDS)
def test_export_hasher_matches_model_codes(kind, fitted, digits, tmp_path):
    images, _ = digits
    assert len(images) >= 1000
    model = fitted[kind]
    hasher = model.export_hasher()
    assert isinstance(hasher, Hasher)
    assert [op["op"] for op in hasher.ops] == ["flatten", "dense"]
    assert hasher.n_bits == 16 and hasher.input_shape == DIGITS_SHAPE
    np.testing.assert_array_equal(hasher.threshold, np.zeros(16, dtype=np.float32))
    np.testing.assert_allclose(hasher.params["op1.bias"], -(model.mean_ @ model.projection_), rtol=1e-5, atol=1e-5)
    codes = model.hash(images)
    np.testing.assert_array_equal(hasher.hash(images), codes)
    # the float32 codes agree with exact float64 centring up to rounding at the boundary
    exact = (images.reshape(len(images), -1).astype(np.float64) - model.mean_) @ model.projection_.astype(np.float64) > 0
    assert np.mean(exact == model.hash_bits(images).astype(bool)) > 0.999
    # and survive the hasher's own save / load
    path = hasher.save(tmp_path / "hasher.npz")
    np.testing.assert_array_equal(Hasher.load(path).hash(images), codes)
    # (N, H, W) single-channel input is accepted too
    np.testing.assert_array_equal(model.hash(images[..., 0]), codes)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, fitted, digits, tmp_path):
    images, _ = digits
    model = fitted[kind]
    paths = model.save(tmp_path / kind)
    assert sorted(p.name for p in paths) == ["params.json", "weights.npz"]
    loaded = get_kind(kind).load(tmp_path / kind)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.hash(images), model.hash(images))
    assert loaded.export_hasher().fingerprint == model.export_hasher().fingerprint
    assert loaded.summary_metrics().keys() >= (model.summary_metrics().keys() - {"fit_seconds"})


def test_errors(digits, tmp_path):
    images, _ = digits
    with pytest.raises(ModelError, match="not fitted"):
        LSHHashModel(input_shape=DIGITS_SHAPE).hash(images)
    with pytest.raises(ModelError, match="shape"):
        LSHHashModel(input_shape=(28, 28, 1)).fit(images)
    with pytest.raises(ModelError, match="bits"):
        LSHHashModel(input_shape=DIGITS_SHAPE, bits=65).fit(images)
    with pytest.raises(ModelError, match="params.json"):
        ITQHashModel.load(tmp_path)
