"""The default kind: Keras and the NumPy Hasher agree, reload is exact, seeds reproduce."""

import numpy as np
import pytest

from semhash.models import build_model
from semhash.models.base import FitContext


def _fit(digits, **params):
    model = build_model("autoencoder", {"input_shape": (8, 8, 1), "bits": 16, "hidden": (48, 24), "epochs": 2, "seed": 0, **params})
    return model.fit(digits.images, context=FitContext(verbose=0))


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def fitted(request, digits):
    # 8 epochs: trained enough that codings saturate, as real models do. After 2 epochs one
    # pre-activation of 28,752 sat at 5e-9, where float32 rounding order (oneDNN vs NumPy)
    # decides the bit; no pair of implementations agrees bit-for-bit there.
    return _fit(digits, tied=request.param, epochs=8)


def test_numpy_hasher_matches_keras_on_all_digits(fitted, digits):
    assert len(digits.images) >= 1000
    keras_bits = fitted.hash_bits_keras(digits.images)
    numpy_bits = fitted.export_hasher().hash_bits(digits.images)
    np.testing.assert_array_equal(numpy_bits, keras_bits)


def test_reload_gives_identical_hashes(fitted, digits, tmp_path):
    fitted.save(tmp_path)
    again = type(fitted).load(tmp_path)
    np.testing.assert_array_equal(again.hash_bits_keras(digits.images), fitted.hash_bits_keras(digits.images))
    assert again.network_.get_config() == fitted.network_.get_config()


def test_tied_has_fewer_weights(digits):
    untied = _fit(digits, tied=False, epochs=1).network_.count_params()
    tied = _fit(digits, tied=True, epochs=1).network_.count_params()
    assert tied < untied


def test_seed_reproduces(digits):
    a = _fit(digits, epochs=1).export_hasher()
    b = _fit(digits, epochs=1).export_hasher()
    assert a.fingerprint == b.fingerprint


def test_noise_only_during_training(digits):
    model = _fit(digits, epochs=1, noise=8.0)
    x = digits.images[:50]
    np.testing.assert_allclose(model.codings(x), model.codings(x))  # inference: no noise
    noisy = np.asarray(model.network_.codings(x, training=True))
    assert not np.allclose(noisy, model.codings(x))


def test_unknown_option_is_refused():
    from semhash.errors import ModelError

    with pytest.raises(ModelError, match="--latent-dim"):
        build_model("autoencoder", {"latent_dim": 2})


def test_coding_noise_accepts_large_stddev_and_serialises():
    import keras

    from semhash.models.tf_common import CodingNoise

    layer = CodingNoise(16.0, seed=3)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.stddev == 16.0 and clone.seed == 3
