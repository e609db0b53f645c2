"""Coding layers: how a hashing network makes its codes binary while it trains.

One Keras layer, :class:`BinaryCoding`, with three ways (``coding``) of turning the coding
pre-activations ``z`` (batch, bits) into codings in [0, 1] during training; at inference every
way gives the same kind of thing, a bit ``z > threshold`` per unit, so the NumPy Hasher
needs only the pre-activations and the threshold:

* ``"sigmoid"`` (the default model's; Salakhutdinov & Hinton): ``sigmoid(z + noise)`` with
  Gaussian noise of stddev ``noise`` during training only; the noise pushes the network to
  saturate the sigmoid so that rounding loses little.  Inference: ``sigmoid(z)`` (continuous,
  its rounding is the bit), threshold 0.
* ``"sign"``: a straight-through sign.  Forward ``(sign(z) + 1) / 2`` (hard 0/1), backward
  through ``tanh``: the loss sees exactly the bits the hash will have.  With ``noise`` > 0
  the bit is stochastic in training, ``1[z + noise * logit(u) > 0]``, ``u ~ U(0, 1)``, i.e.
  ``1[sigmoid(z / noise) > u]`` as in CIBHash (Qiu et al., 2021), and the gradient is that
  of its expectation (:func:`stochastic_sign`): a bit near the threshold is a coin toss, so
  training pushes pre-activations away from it.  Threshold 0.
* ``"bihalf"``: the bi-half layer (Li & van Gemert, AAAI 2021): within each training batch,
  for every bit, the half of the images with the largest ``z`` get 1 and the other half 0,
  so each bit is exactly balanced over the batch (maximum bit entropy); backward the
  gradient passes straight through plus ``gamma * (u - b) / numel`` pulling ``u`` towards its
  code (b = 2 * bit - 1, u = z).  Inference: bit = ``z > median``, the per-bit median of ``z``
  over (a sample of) the training images (:func:`median_thresholds`, set after every epoch
  by :class:`MedianThreshold`), stored in the layer so that a ``.keras`` reload and the
  exported Hasher threshold alike.

Keras' GaussianNoise refuses stddev > 1 and the default model needs 8: the noise is drawn
here.
"""

from __future__ import annotations

import numpy as np

from semhash.errors import ModelError
from semhash.models.tf_common import keras, ops, tf

CODINGS = ("sigmoid", "sign", "bihalf")


def check_coding(coding: str) -> str:
    if coding not in CODINGS:
        raise ModelError(f"coding must be one of {', '.join(CODINGS)}, not {coding!r}")
    return coding


def straight_through_sign(z):
    """Forward sign(z) in {-1, 1} (0 maps to -1, as ``z > 0`` does); backward d tanh(z)/dz."""
    soft = ops.tanh(z)
    hard = ops.where(z > 0, 1.0, -1.0)
    return soft + ops.stop_gradient(hard - soft)


def stochastic_sign(z, scale: float, seed_generator):
    """Forward sign(z + scale * logistic noise) = the stochastic binary unit
    1[sigmoid(z / scale) > u] in {-1, 1}; backward the gradient of its expectation
    tanh(z / (2 scale)) (CIBHash's straight-through estimator: through the probability, not
    through the noisy value, whose gradient would be noise itself)."""
    u = keras.random.uniform(ops.shape(z), minval=1e-6, maxval=1.0 - 1e-6, seed=seed_generator)
    noisy = z + scale * ops.cast(ops.log(u) - ops.log(1.0 - u), z.dtype)
    hard = ops.where(noisy > 0, 1.0, -1.0)
    soft = ops.tanh(z / (2.0 * scale))
    return soft + ops.stop_gradient(hard - soft)


def bihalf_sign(z, gamma: float):
    """Bi-half codes in {-1, 1}: per column, the larger half of the batch is +1.  Ties are
    broken by position (a stable sort), so exactly floor(n/2) entries are +1."""

    @tf.custom_gradient
    def _bihalf(u):
        n = tf.shape(u)[0]
        order = tf.argsort(u, axis=0, direction="DESCENDING", stable=True)
        rank = tf.argsort(order, axis=0, stable=True)  # the rank of every entry within its column
        b = tf.where(rank < n // 2, 1.0, -1.0)
        b = tf.cast(b, u.dtype)

        def grad(upstream):
            size = tf.cast(tf.size(u), u.dtype)
            return upstream + gamma * (u - b) / size

        return b, grad

    return _bihalf(z)


@keras.saving.register_keras_serializable(package="semhash")
class BinaryCoding(keras.layers.Layer):
    """Coding pre-activations -> codings in [0, 1]; see the module docstring.

    ``threshold`` (a non-trainable weight, one per bit) exists for ``bihalf`` only, so the
    sigmoid layer adds no weight to a model and older models load unchanged.
    """

    def __init__(self, bits: int, coding: str = "sigmoid", noise: float = 8.0, gamma: float = 6.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.bits = int(bits)
        self.coding = check_coding(coding)
        if noise < 0:
            raise ValueError("noise must be >= 0")
        self.noise = float(noise)
        self.gamma = float(gamma)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        if self.coding == "bihalf":
            self.threshold = self.add_weight(shape=(self.bits,), initializer="zeros", trainable=False, name="threshold")
        self.built = True

    def threshold_values(self) -> np.ndarray:
        """The per-bit threshold on the pre-activation (0 unless ``bihalf``)."""
        if self.coding == "bihalf":
            return np.asarray(self.threshold, dtype=np.float32)
        return np.zeros(self.bits, dtype=np.float32)

    def set_threshold(self, values) -> None:
        if self.coding == "bihalf":
            self.threshold.assign(np.asarray(values, dtype=np.float32).reshape(self.bits))

    def hard_bits(self, z):
        """What the hash is: 1 where ``z`` is strictly above the threshold."""
        threshold = self.threshold if self.coding == "bihalf" else 0.0
        return ops.cast(z > threshold, "float32")

    def call(self, z, training=False):
        if self.coding == "sigmoid":
            if training and self.noise > 0:
                z = z + ops.cast(keras.random.normal(ops.shape(z), stddev=self.noise, seed=self.seed_generator), z.dtype)
            return ops.sigmoid(z)
        if not training:
            return self.hard_bits(z)
        if self.coding == "sign":
            if self.noise > 0:
                return (stochastic_sign(z, self.noise, self.seed_generator) + 1.0) / 2.0
            return (straight_through_sign(z) + 1.0) / 2.0
        return (bihalf_sign(z, self.gamma) + 1.0) / 2.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "bits": self.bits,
            "coding": self.coding,
            "noise": self.noise,
            "gamma": self.gamma,
            "seed": self.seed,
        }


def median_thresholds(values: np.ndarray) -> np.ndarray:
    """Per column, the midpoint between the two middle order statistics (the median for an
    even count; for an odd count the midpoint just above the median), so that exactly
    ceil(N/2) or floor(N/2) values lie above it, and none lies on it (float32 round-off
    between Keras and NumPy cannot flip a training image's bit)."""
    values = np.sort(np.asarray(values, dtype=np.float64), axis=0)
    n = len(values)
    if n == 0:
        raise ModelError("no training images to compute the median thresholds")
    if n == 1:
        return values[0].astype(np.float32)
    k = n // 2
    return ((values[k - 1] + values[k]) / 2.0).astype(np.float32)


class MedianThreshold(keras.callbacks.Callback):
    """For ``bihalf``: after every epoch, set the coding layer's inference threshold to each
    bit's median pre-activation over ``images`` (a sample of the training images), so that
    the hash of every epoch (scored by a checkpoint selector placed after this callback, and
    saved with the weights it restores) is balanced on the training data."""

    def __init__(self, coding_layer: BinaryCoding, preactivations_of, images):
        super().__init__()
        self.coding_layer = coding_layer
        self.preactivations_of = preactivations_of
        self.images = images

    def on_epoch_end(self, epoch, logs=None):
        self.coding_layer.set_threshold(median_thresholds(self.preactivations_of(self.images)))
