"""Variational autoencoder kind (``vae``): hash = μ binarised at per-dimension medians.

Encoder ``x -> (μ, log σ²)``; a codings sample ``z = μ + exp(½ log σ²) · ε`` (the registered
:class:`Sampling` layer); decoder ``z -> x̂`` with a sigmoid output.  The loss per image is
the binary cross-entropy summed over pixels plus
``KL(N(μ, σ²) || N(0, I)) = -½ Σ (1 + log σ² - μ² - σ²)`` (times ``kl_weight``), averaged
over the batch.  The KL term is added with ``add_loss`` in ``call`` and the network's own
``compute_loss`` adds the reconstruction term (no hand-written GradientTape).

Two architectures:

* dense (default): ``flatten -> 500 -> 500 -> (μ, log σ²)`` and the mirror decoder;
* ``conv=True``: as the Keras convolutional VAE example, Conv2D 32 and 64 filters 3x3 with
  stride 2 and 'same' padding, a dense layer, then (μ, log σ²); the decoder is a dense layer
  to a (H/4, W/4, 64) map and Conv2DTranspose 64, 32 (stride 2) and 1 (or C) channels.

Hashing: the latent dimension *is* the number of bits (``latent_dim`` defaults to ``bits``).
Bit i is 1 when μ_i is strictly above the median of μ_i over the training images (the
midpoint between the two middle order statistics), so every bit is 1 for half of the
training set: balanced bits, which spread the images evenly over the Hamming space.  The
exported Hasher is the encoder's μ path (no sampling) with these medians as thresholds.

``generate(n, seed)`` decodes codings drawn from N(0, I); ``decode(z)`` decodes given ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.errors import ModelError
from semhash.models.base import FitContext
from semhash.models.keras_common import (
    KerasHashModel,
    _validation_split,
    code_stats,
    fit_network,
    keras_layers_ops,
    training_callbacks,
)
from semhash.models.codings import median_thresholds
from semhash.models.tf_common import device_description, keras, ops, set_seed


@keras.saving.register_keras_serializable(package="semhash")
class Sampling(keras.layers.Layer):
    """(μ, log σ²) -> μ + σ ε with ε ~ N(0, I) (the reparameterisation trick)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        mean, log_var = inputs
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * ops.cast(eps, mean.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="semhash")
class VariationalAutoencoder(keras.Model):
    """Dense or convolutional VAE; ``call`` returns the reconstruction of a sampled coding."""

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        latent_dim: int = 30,
        hidden: Sequence[int] = (500, 500),
        conv: bool = False,
        filters: Sequence[int] = (32, 64),
        kl_weight: float = 1.0,
        activation: str = "relu",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_dim = int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.conv = bool(conv)
        self.filters = tuple(int(f) for f in filters)
        self.kl_weight = float(kl_weight)
        self.activation = activation
        self.seed = seed
        height, width, channels = self.image_shape
        self.n_inputs = height * width * channels
        # -- encoder: features -> (μ, log σ²)
        self.encoder_layers: list = []
        if self.conv:
            for i, f in enumerate(self.filters):
                self.encoder_layers.append(
                    keras.layers.Conv2D(f, 3, strides=2, padding="same", activation=activation, name=f"encoder_conv_{i}")
                )
        self.encoder_layers.append(keras.layers.Flatten(name="encoder_flatten"))
        for i, h in enumerate(self.hidden):
            self.encoder_layers.append(keras.layers.Dense(h, activation=activation, name=f"encoder_{i}"))
        self.z_mean = keras.layers.Dense(self.latent_dim, name="z_mean")
        self.z_log_var = keras.layers.Dense(self.latent_dim, name="z_log_var")
        self.sampling = Sampling(seed=seed, name="sampling")
        # -- decoder: z -> image
        self.decoder_layers: list = []
        if self.conv:
            h, w = height, width
            for _ in self.filters:
                h, w = -(-h // 2), -(-w // 2)
            self.map_shape = (h, w, self.filters[-1])
            for i, units in enumerate(reversed(self.hidden)):
                self.decoder_layers.append(keras.layers.Dense(units, activation=activation, name=f"decoder_{i}"))
            self.decoder_layers.append(
                keras.layers.Dense(int(np.prod(self.map_shape)), activation=activation, name="decoder_map")
            )
            self.decoder_layers.append(keras.layers.Reshape(self.map_shape, name="decoder_reshape"))
            for i, f in enumerate(reversed(self.filters)):
                self.decoder_layers.append(
                    keras.layers.Conv2DTranspose(
                        f, 3, strides=2, padding="same", activation=activation, name=f"decoder_deconv_{i}"
                    )
                )
            self.decoder_layers.append(
                keras.layers.Conv2DTranspose(channels, 3, padding="same", activation="sigmoid", name="decoder_output")
            )
            out_h, out_w = h * 2 ** len(self.filters), w * 2 ** len(self.filters)
            if (out_h, out_w) != (height, width):  # sizes not divisible by 2**len(filters)
                self.decoder_layers.append(
                    keras.layers.Cropping2D(((0, out_h - height), (0, out_w - width)), name="decoder_crop")
                )
        else:
            for i, units in enumerate(reversed(self.hidden)):
                self.decoder_layers.append(keras.layers.Dense(units, activation=activation, name=f"decoder_{i}"))
            self.decoder_layers.append(keras.layers.Dense(self.n_inputs, activation="sigmoid", name="decoder_output"))
            self.decoder_layers.append(keras.layers.Reshape(self.image_shape, name="decoder_reshape"))
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    def build(self, input_shape=None):
        shape = (None, *self.image_shape)
        for layer in self.encoder_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.z_mean.build(shape)
        self.z_log_var.build(shape)
        shape = (None, self.latent_dim)
        for layer in self.decoder_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    # -- pieces ---------------------------------------------------------------------------
    def encode(self, x):
        """-> (μ, log σ²)."""
        h = x
        for layer in self.encoder_layers:
            h = layer(h)
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z):
        h = z
        for layer in self.decoder_layers:
            h = layer(h)
        return h

    def call(self, x, training=False):
        mean, log_var = self.encode(x)
        z = self.sampling([mean, log_var])
        kl = -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        self.add_loss(self.kl_weight * ops.mean(kl))
        return self.decode(z)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        bce = ops.binary_crossentropy(y, y_pred)  # element-wise (clipped)
        reconstruction = ops.mean(ops.sum(ops.reshape(bce, (ops.shape(bce)[0], -1)), axis=1))
        kl = ops.sum(self.losses) if self.losses else ops.zeros(())
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return reconstruction + kl

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "conv": self.conv,
            "filters": list(self.filters),
            "kl_weight": self.kl_weight,
            "activation": self.activation,
            "seed": self.seed,
        }


class VAEHashModel(KerasHashModel):
    kind = "vae"
    description = "variational autoencoder; bits = μ above its per-dimension median (balanced bits)"
    needs_labels = False
    STATE = ["threshold_", "metrics_", "history_", "train_seconds_", "device_"]

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),
        bits: int | None = None,
        latent_dim: int | None = None,
        hidden: Sequence[int] | None = None,
        conv: bool = False,
        filters: Sequence[int] = (32, 64),
        kl_weight: float = 1.0,
        activation: str = "relu",
        epochs: int = 30,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        validation_split: float = 0.1,
        patience: int = 5,
        seed: int = 0,
    ):
        """``bits`` and ``latent_dim`` are one number: give either (or both, equal); with
        neither, 30.  ``hidden`` defaults to (500, 500) dense, (256,) after the convs."""
        if latent_dim is not None and bits is not None and int(latent_dim) != int(bits):
            raise ModelError(
                f"vae: the hash has one bit per latent dimension, so bits ({bits}) must equal "
                f"latent_dim ({latent_dim}); give one of them"
            )
        size = int(latent_dim if latent_dim is not None else bits if bits is not None else 30)
        if not 1 <= size <= 64:
            raise ModelError(f"vae: latent_dim / bits must be between 1 and 64, not {size}")
        self.input_shape = input_shape
        self.bits = size
        self.latent_dim = size
        self.hidden = hidden
        self.conv = conv
        self.filters = filters
        self.kl_weight = kl_weight
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_split = validation_split
        self.patience = patience
        self.seed = seed

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        if self.hidden is not None:
            return tuple(int(h) for h in self.hidden)
        return (256,) if self.conv else (500, 500)

    def _build_network(self) -> VariationalAutoencoder:
        net = VariationalAutoencoder(
            image_shape=self.input_shape,
            latent_dim=self.latent_dim,
            hidden=self.hidden_sizes,
            conv=bool(self.conv),
            filters=self.filters,
            kl_weight=self.kl_weight,
            activation=self.activation,
            seed=self.seed,
        )
        net.build((None, *tuple(self.input_shape)))
        return net

    def fit(self, images, labels=None, *, context: FitContext | None = None):
        context = context or FitContext()
        set_seed(self.seed)
        images = np.asarray(images, dtype=np.float32)
        train_x, val_x = _validation_split(images, self.validation_split, self.seed)
        self.network_ = self._build_network()
        self.network_.compile(optimizer=keras.optimizers.Adam(self.learning_rate))
        callbacks = training_callbacks(self.epochs, context.verbose, self.kind, self.patience if val_x is not None else 0)
        self.device_ = device_description()
        context.log(f"training {self.kind} on {len(train_x)} images ({self.device_})")
        started = time.time()
        self.history_ = fit_network(
            self.network_,
            train_x,
            train_x,
            None if val_x is None else (val_x, val_x),
            epochs=self.epochs,
            batch_size=self.batch_size,
            callbacks=callbacks,
        )
        self.train_seconds_ = time.time() - started
        mu = self.encode_mean(train_x)
        self.threshold_ = median_thresholds(mu)
        self.metrics_ = {}
        for key in ("val_loss", "val_reconstruction_loss", "val_kl_loss"):
            if self.history_.get(key):
                best = int(np.argmin(self.history_["val_loss"]))
                self.metrics_[key] = float(self.history_[key][best])
        self.metrics_.update(code_stats(mu, self.threshold_))
        return self

    # -- the model's own use --------------------------------------------------------------
    def encode_mean(self, images) -> np.ndarray:
        """μ for each image (no sampling)."""
        out = [
            np.asarray(self.network_.encode(np.asarray(images[s : s + 1024], dtype=np.float32))[0])
            for s in range(0, len(images), 1024)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.latent_dim), np.float32)

    def codings(self, images) -> np.ndarray:
        return self.encode_mean(images)

    def hash_bits_keras(self, images) -> np.ndarray:
        return (self.encode_mean(images) > np.asarray(self.threshold_, dtype=np.float32)).astype(np.uint8)

    def decode(self, z) -> np.ndarray:
        """Codings (N, latent_dim) -> images (N, H, W, C) in [0, 1]."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.latent_dim)
        return np.asarray(self.network_.decode(z))

    def generate(self, n: int, seed: int | None = 0) -> np.ndarray:
        """``n`` new images decoded from codings drawn from N(0, I)."""
        z = np.random.default_rng(seed).standard_normal((int(n), self.latent_dim)).astype(np.float32)
        return self.decode(z)

    def reconstruct(self, images) -> np.ndarray:
        """Decode μ (the deterministic reconstruction)."""
        return self.decode(self.encode_mean(images))

    def export_hasher(self):
        from semhash.inference import Hasher

        net = self.network_
        ops_list: list[dict] = []
        params: dict[str, np.ndarray] = {}
        keras_layers_ops([*net.encoder_layers, net.z_mean], params, ops_list)
        info = {"kind": self.kind, "coding": "vae-mu-median", "conv": bool(self.conv)}
        return Hasher(ops_list, params, self.bits, tuple(self.input_shape), np.asarray(self.threshold_), info=info)

    # -- persistence ----------------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path) -> "VAEHashModel":
        model = super().load(directory)
        if hasattr(model, "threshold_"):
            model.threshold_ = np.asarray(model.threshold_, dtype=np.float32)
        return model

