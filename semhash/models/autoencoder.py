"""The default kind: Salakhutdinov & Hinton's semantic-hashing autoencoder.

input -> 500 -> 300 -> ``bits``-unit sigmoid coding layer -> 300 -> 500 -> sigmoid output,
binary cross-entropy, Adam.  Gaussian noise of large stddev is added to the coding layer's
inputs during training only, which pushes the sigmoid codings to saturate at 0 or 1 so that
rounding them (the hash) loses little.  Options: tied decoder weights (``tied``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.models.base import FitContext, HashModel, save_params_json
from semhash.models.tf_common import (
    CodingNoise,
    EpochProgress,
    dense_ops,
    device_description,
    history_dict,
    keras,
    ops,
    set_seed,
)


@keras.saving.register_keras_serializable(package="semhash")
class SemanticHashingAutoencoder(keras.Model):
    """Dense autoencoder with a noisy sigmoid coding layer; optionally tied weights.

    With ``tied=True`` the decoder has no kernels of its own: layer k of the decoder uses the
    transpose of encoder kernel k (Keras 3 layers have no ``input_shape``, so the classic
    DenseTranspose layer recipe breaks; tying inside one model avoids it).  Decoder biases
    stay untied.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        hidden: Sequence[int] = (500, 300),
        bits: int = 30,
        noise: float = 4.0,
        tied: bool = False,
        activation: str = "relu",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.hidden = tuple(int(h) for h in hidden)
        self.bits = int(bits)
        self.noise = float(noise)
        self.tied = bool(tied)
        self.activation = activation
        self.seed = seed
        self.n_inputs = int(np.prod(self.image_shape))
        self.flatten = keras.layers.Flatten()
        self.encoder_layers = [
            keras.layers.Dense(h, activation=activation, name=f"encoder_{i}") for i, h in enumerate(self.hidden)
        ]
        self.coding_layer = keras.layers.Dense(self.bits, name="coding")
        self.coding_noise = CodingNoise(self.noise, seed=seed, name="coding_noise")
        sizes = [self.n_inputs, *self.hidden]  # decoder output sizes, mirrored
        if self.tied:
            self.decoder_layers = []
        else:
            decoder_units = list(reversed(sizes))
            self.decoder_layers = [
                keras.layers.Dense(u, activation=activation if k < len(decoder_units) - 1 else "sigmoid", name=f"decoder_{k}")
                for k, u in enumerate(decoder_units)
            ]
        self.output_reshape = keras.layers.Reshape(self.image_shape)

    def build(self, input_shape=None):
        # create all state here so that .keras files load (tied biases included)
        n = self.n_inputs
        self.flatten.build((None, *self.image_shape))
        for layer in self.encoder_layers:
            layer.build((None, n))
            n = layer.units
        self.coding_layer.build((None, n))
        if self.tied:
            sizes = [self.n_inputs, *self.hidden]
            self.tied_biases = [
                self.add_weight(shape=(s,), initializer="zeros", name=f"decoder_bias_{k}")
                for k, s in enumerate(reversed(sizes))
            ]
        else:
            n = self.bits
            for layer in self.decoder_layers:
                layer.build((None, n))
                n = layer.units
        self.built = True

    def encode_preactivation(self, x):
        h = self.flatten(x)
        for layer in self.encoder_layers:
            h = layer(h)
        return self.coding_layer(h)

    def codings(self, x, training=False):
        return ops.sigmoid(self.coding_noise(self.encode_preactivation(x), training=training))

    def decode(self, codings):
        h = codings
        if self.tied:
            act = keras.activations.get(self.activation)
            kernels = [layer.kernel for layer in self.encoder_layers] + [self.coding_layer.kernel]
            for k, (kernel, bias) in enumerate(zip(reversed(kernels), self.tied_biases)):
                h = ops.matmul(h, ops.transpose(kernel)) + bias
                h = ops.sigmoid(h) if k == len(kernels) - 1 else act(h)
        else:
            for layer in self.decoder_layers:
                h = layer(h)
        return self.output_reshape(h)

    def call(self, x, training=False):
        return self.decode(self.codings(x, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "hidden": list(self.hidden),
            "bits": self.bits,
            "noise": self.noise,
            "tied": self.tied,
            "activation": self.activation,
            "seed": self.seed,
        }


class AutoencoderHashModel(HashModel):
    kind = "autoencoder"
    description = "stacked autoencoder with a noisy sigmoid coding layer (semantic hashing)"
    needs_labels = False
    uses_tensorflow = True

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),
        bits: int = 30,
        hidden: Sequence[int] = (500, 300),
        noise: float = 4.0,
        tied: bool = False,
        activation: str = "relu",
        epochs: int = 30,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        validation_split: float = 0.1,
        patience: int = 5,
        seed: int = 0,
    ):
        self.input_shape = input_shape
        self.bits = bits
        self.hidden = hidden
        self.noise = noise
        self.tied = tied
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_split = validation_split
        self.patience = patience
        self.seed = seed

    def _build_network(self) -> SemanticHashingAutoencoder:
        net = SemanticHashingAutoencoder(
            image_shape=self.input_shape,
            hidden=self.hidden,
            bits=self.bits,
            noise=self.noise,
            tied=self.tied,
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
        self.network_.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="binary_crossentropy")
        callbacks = [EpochProgress(self.epochs, enabled=context.verbose > 0, description=self.kind)]
        if val_x is not None and self.patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience, restore_best_weights=True)
            )
        self.device_ = device_description()
        context.log(f"training {self.kind} on {len(train_x)} images ({self.device_})")
        started = time.time()
        history = self.network_.fit(
            train_x,
            train_x,
            validation_data=None if val_x is None else (val_x, val_x),
            epochs=self.epochs,
            batch_size=self.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
        )
        self.train_seconds_ = time.time() - started
        self.history_ = history_dict(history)
        return self

    def codings(self, images) -> np.ndarray:
        """Sigmoid codings without noise (what the hash rounds)."""
        return np.asarray(self.network_.codings(np.asarray(images, dtype=np.float32), training=False))

    def reconstruct(self, images) -> np.ndarray:
        return np.asarray(self.network_.predict(np.asarray(images, dtype=np.float32), verbose=0))

    def hash_bits_keras(self, images) -> np.ndarray:
        """Bits computed by Keras itself: round(sigmoid(pre-activation)), no noise."""
        return np.asarray(ops.round(self.network_.codings(np.asarray(images, dtype=np.float32)))).astype(np.uint8)

    def export_hasher(self):
        from semhash.inference import Hasher

        net = self.network_
        ops_list: list[dict] = [{"op": "flatten"}]
        params: dict[str, np.ndarray] = {}
        dense_ops(net.encoder_layers, params, ops_list)
        dense_ops([net.coding_layer], params, ops_list)
        return Hasher(ops_list, params, self.bits, tuple(self.input_shape), 0.0, info={"kind": self.kind, "coding": "sigmoid"})

    def save(self, directory: Path) -> list[Path]:
        directory = Path(directory)
        path = directory / "model.keras"
        self.network_.save(path)
        return [path, save_params_json(self, directory)]

    @classmethod
    def load(cls, directory: Path) -> "AutoencoderHashModel":
        directory = Path(directory)
        params = json.loads((directory / "params.json").read_text())
        model = cls(**params)
        model.network_ = keras.models.load_model(directory / "model.keras")
        return model


def _validation_split(images: np.ndarray, fraction: float, seed: int):
    """Seeded random hold-out for early stopping; (train, None) when fraction is 0."""
    if not fraction or len(images) < 10:
        return images, None
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    n_val = max(1, int(round(len(images) * fraction)))
    return images[order[n_val:]], images[order[:n_val]]
