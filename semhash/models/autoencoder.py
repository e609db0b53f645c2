"""The default kind: Salakhutdinov & Hinton's semantic-hashing autoencoder.

input -> 1000 -> 500 -> ``bits``-unit sigmoid coding layer -> 500 -> 1000 -> sigmoid output
(``hidden``; the textbook 500 -> 300 is ``hidden=(500, 300)``), binary cross-entropy, Adam.  Gaussian noise of large stddev is added to the coding layer's
inputs during training only, which pushes the sigmoid codings to saturate at 0 or 1 so that
rounding them (the hash) loses little.

Defaults chosen by measurement (docs/BENCHMARKS.md): noise 8, tied weights, balanced and
decorrelated codings, learning rate 3e-4 for 3,000 steps, checkpoint by validation mAP.

Options:

* ``tied``      decoder kernels are the transposes of the encoder kernels;
* ``pretrain``  ``"gaussian"`` or ``"dropout"``: greedy layer-wise denoising pretraining
  (one shallow autoencoder per hidden layer and for the coding layer, see
  :mod:`semhash.models.pretraining`) before the whole stack is fine-tuned for ``epochs``;
* ``sparsity``  weight of a KL-divergence penalty pulling the mean activation of each coding
  unit towards ``sparsity_target`` (a sparse autoencoder).

What the Keras kinds share (save/load, fit scaffolding, hold-out splits, Hasher export
helpers) lives in :mod:`semhash.models.keras_common`.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from semhash.errors import ModelError
from semhash.models.base import FitContext
from semhash.models.keras_common import (
    KerasHashModel,
    ValidationRetrieval,
    checkpoint_split,
    code_stats,
    conv_feature_layers,
    fit_network,
    keras_layers_ops,
    training_callbacks,
    training_sample,
)
from semhash.models.codings import BinaryCoding, MedianThreshold, check_coding
from semhash.models.tf_common import CodingNoise, device_description, keras, ops, set_seed


@keras.saving.register_keras_serializable(package="semhash")
class SemanticHashingAutoencoder(keras.Model):
    """Dense autoencoder with a noisy sigmoid coding layer; optionally tied weights.

    With ``tied=True`` the decoder has no kernels of its own: layer k of the decoder uses the
    transpose of encoder kernel k (Keras 3 layers have no ``input_shape``, so the classic
    DenseTranspose layer recipe breaks; tying inside one model avoids it).  Decoder biases
    stay untied.

    ``coding`` other than ``"sigmoid"`` replaces the noisy sigmoid by a
    :class:`~semhash.models.codings.BinaryCoding` (``"sign"``: straight-through sign,
    ``"bihalf"``: the bi-half layer); ``conv=True`` puts ``[Conv2D 3x3 -> ReLU -> MaxPool 2x2]``
    blocks (``filters``) before the dense encoder layers.  The decoder stays dense and ends
    in the pixels; with a convolutional encoder and tied weights, the dense layers are tied
    and the last decoder layer (to the pixels) has its own kernel.  The defaults build
    exactly the network of earlier versions, so their ``.keras`` files load unchanged.
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
        sparsity: float = 0.0,
        sparsity_target: float = 0.1,
        balance: float = 0.0,
        decorrelation: float = 0.0,
        coding: str = "sigmoid",
        gamma: float = 6.0,
        conv: bool = False,
        filters: Sequence[int] = (32, 64),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.coding = check_coding(coding)
        self.gamma = float(gamma)
        self.conv = bool(conv)
        self.filters = tuple(int(f) for f in filters or ())
        self.balance = float(balance)
        self.decorrelation = float(decorrelation)
        self.sparsity = float(sparsity)
        self.sparsity_target = float(sparsity_target)
        if self.sparsity < 0:
            raise ValueError("sparsity must be >= 0")
        if not 0.0 < self.sparsity_target < 1.0:
            raise ValueError("sparsity_target must be strictly between 0 and 1")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.hidden = tuple(int(h) for h in hidden)
        self.bits = int(bits)
        self.noise = float(noise)
        self.tied = bool(tied)
        self.activation = activation
        self.seed = seed
        self.n_inputs = int(np.prod(self.image_shape))
        # conv blocks (without the flatten conv_feature_layers ends with: ours is below)
        self.conv_layers = conv_feature_layers(self.filters, (), batch_norm=False)[:-1] if self.conv else []
        if self.conv and not self.filters:
            raise ValueError("a convolutional encoder needs filters")
        self.flatten = keras.layers.Flatten()
        self.encoder_layers = [
            keras.layers.Dense(h, activation=activation, name=f"encoder_{i}") for i, h in enumerate(self.hidden)
        ]
        if self.conv and not self.hidden:
            raise ValueError("a convolutional encoder needs at least one hidden dense layer")
        self.coding_layer = keras.layers.Dense(self.bits, name="coding")
        if self.coding == "sigmoid":
            self.coding_noise = CodingNoise(self.noise, seed=seed, name="coding_noise")
        else:
            self.binary_coding = BinaryCoding(self.bits, self.coding, self.noise, self.gamma, seed=seed, name="binary_coding")
        sizes = [self.n_inputs, *self.hidden]  # decoder output sizes, mirrored
        if self.tied:
            self.decoder_layers = []
            if self.conv:  # tied dense layers back to the first hidden layer, then to the pixels
                self.pixel_layer = keras.layers.Dense(self.n_inputs, activation="sigmoid", name="decoder_pixels")
        else:
            decoder_units = list(reversed(sizes))
            self.decoder_layers = [
                keras.layers.Dense(u, activation=activation if k < len(decoder_units) - 1 else "sigmoid", name=f"decoder_{k}")
                for k, u in enumerate(decoder_units)
            ]
        self.output_reshape = keras.layers.Reshape(self.image_shape)

    def build(self, input_shape=None):
        # create all state here so that .keras files load (tied biases included)
        shape = (None, *self.image_shape)
        for layer in self.conv_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.flatten.build(shape)
        n = int(np.prod(shape[1:]))
        for layer in self.encoder_layers:
            layer.build((None, n))
            n = layer.units
        self.coding_layer.build((None, n))
        if self.coding != "sigmoid":
            self.binary_coding.build((None, self.bits))
        if self.tied:
            sizes = [*self.hidden] if self.conv else [self.n_inputs, *self.hidden]
            self.tied_biases = [
                self.add_weight(shape=(s,), initializer="zeros", name=f"decoder_bias_{k}")
                for k, s in enumerate(reversed(sizes))
            ]
            if self.conv:
                self.pixel_layer.build((None, self.hidden[0]))
        else:
            n = self.bits
            for layer in self.decoder_layers:
                layer.build((None, n))
                n = layer.units
        self.built = True

    def encode_preactivation(self, x):
        h = x
        for layer in self.conv_layers:
            h = layer(h)
        h = self.flatten(h)
        for layer in self.encoder_layers:
            h = layer(h)
        return self.coding_layer(h)

    def codings(self, x, training=False):
        """Sigmoid codings (noisy in training); with a binary ``coding``, 0/1 codings (hard at
        inference, straight-through in training)."""
        if self.coding == "sigmoid":
            return ops.sigmoid(self.coding_noise(self.encode_preactivation(x), training=training))
        return self.binary_coding(self.encode_preactivation(x), training=training)

    def hash_layers(self) -> list:
        return [*self.conv_layers, self.flatten, *self.encoder_layers, self.coding_layer]

    def threshold_values(self) -> np.ndarray:
        if self.coding == "sigmoid":
            return np.zeros(self.bits, dtype=np.float32)
        return self.binary_coding.threshold_values()

    def decode(self, codings):
        h = codings
        if self.tied:
            act = keras.activations.get(self.activation)
            kernels = [layer.kernel for layer in self.encoder_layers] + [self.coding_layer.kernel]
            if self.conv:
                kernels = kernels[1:]  # the first dense layer reads conv features, not pixels
            for k, (kernel, bias) in enumerate(zip(reversed(kernels), self.tied_biases)):
                h = ops.matmul(h, ops.transpose(kernel)) + bias
                h = ops.sigmoid(h) if k == len(kernels) - 1 and not self.conv else act(h)
            if self.conv:
                h = self.pixel_layer(h)
        else:
            for layer in self.decoder_layers:
                h = layer(h)
        return self.output_reshape(h)

    def call(self, x, training=False):
        codings = self.codings(x, training=training)
        if self.sparsity > 0:
            self.add_loss(self.sparsity * kl_sparsity(codings, self.sparsity_target))
        if training and (self.balance > 0 or self.decorrelation > 0):
            self.add_loss(code_regularisers(codings, self.balance, self.decorrelation))
        return self.decode(codings)

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
            "sparsity": self.sparsity,
            "sparsity_target": self.sparsity_target,
            "balance": self.balance,
            "decorrelation": self.decorrelation,
            "coding": self.coding,
            "gamma": self.gamma,
            "conv": self.conv,
            "filters": list(self.filters),
        }


def kl_sparsity(activations, target: float):
    """Sum over units of KL(target || mean activation over the batch) (Géron ch. 15)."""
    eps = 1e-6
    rho_hat = ops.clip(ops.mean(activations, axis=0), eps, 1.0 - eps)
    rho = target
    kl = rho * ops.log(rho / rho_hat) + (1.0 - rho) * ops.log((1.0 - rho) / (1.0 - rho_hat))
    return ops.sum(kl)


def code_regularisers(codings, balance: float, decorrelation: float):
    """Balanced, decorrelated bits (what ITQ gets from PCA + rotation), on the sigmoid codings c:
    balance * mean_j (batch mean of c_j - 0.5)^2 + decorrelation * sum_{j != k} cov(c)_jk^2 / (B(B-1)).
    Without them, mAP over the whole Hamming ranking falls below ITQ's (docs/BENCHMARKS.md)."""
    bits = codings.shape[-1]
    mean = ops.mean(codings, axis=0)
    loss = balance * ops.mean((mean - 0.5) ** 2)
    centred = codings - mean
    cov = ops.matmul(ops.transpose(centred), centred) / ops.cast(ops.shape(codings)[0], codings.dtype)
    off_diagonal = cov * (1.0 - ops.eye(bits, dtype=codings.dtype))
    return loss + decorrelation * ops.sum(off_diagonal**2) / (bits * (bits - 1))


class AutoencoderHashModel(KerasHashModel):
    kind = "autoencoder"
    description = "stacked autoencoder with a noisy sigmoid coding layer (semantic hashing)"
    needs_labels = False
    STATE = ["metrics_", "history_", "pretrain_history_", "train_seconds_", "device_"]

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),
        bits: int = 30,
        hidden: Sequence[int] = (1000, 500),  # beats ITQ on Fashion-MNIST too (docs/BENCHMARKS.md)
        noise: float = 8.0,  # chosen by a noise sweep (docs/BENCHMARKS.md, "Choosing the default noise")
        tied: bool = True,  # defaults from the quality experiments (docs/BENCHMARKS.md, issue 4)
        activation: str = "relu",
        pretrain: str | None = None,
        pretrain_noise: float = 0.5,
        pretrain_keep: float = 0.8,
        pretrain_epochs: int = 5,
        sparsity: float = 0.0,
        sparsity_target: float = 0.1,
        balance: float = 1.0,
        decorrelation: float = 1.0,
        coding: str = "sigmoid",
        gamma: float = 6.0,
        conv: bool = False,
        filters: Sequence[int] = (16, 32),
        select_by: str = "val_map",
        select_tolerance: float = 0.01,
        train_steps: int = 3000,
        epochs: int | None = None,
        batch_size: int = 64,
        learning_rate: float = 3e-4,
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
        self.pretrain = pretrain
        self.pretrain_noise = pretrain_noise
        self.pretrain_keep = pretrain_keep
        self.pretrain_epochs = pretrain_epochs
        self.sparsity = sparsity
        self.sparsity_target = sparsity_target
        self.balance = balance
        self.decorrelation = decorrelation
        self.coding = coding
        self.gamma = gamma
        self.conv = conv
        self.filters = filters
        self.select_by = select_by
        self.select_tolerance = select_tolerance
        self.train_steps = train_steps
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
            sparsity=self.sparsity,
            sparsity_target=self.sparsity_target,
            balance=self.balance,
            decorrelation=self.decorrelation,
            coding=self.coding,
            gamma=self.gamma,
            conv=bool(self.conv),
            filters=tuple(self.filters or ()),
        )
        net.build((None, *tuple(self.input_shape)))
        return net

    def _epochs(self, n_train: int) -> int:
        """``epochs`` when given, else enough epochs for ``train_steps`` optimizer steps (so
        small and large datasets get comparable training: 53 epochs of mnist-5k, 4 of
        Fashion-MNIST's 54,000)."""
        if self.epochs:
            return int(self.epochs)
        batches = int(np.ceil(n_train / int(self.batch_size)))
        return max(1, int(np.ceil(int(self.train_steps) / batches)))

    def _check_options(self) -> None:
        if self.pretrain not in (None, "", "none", "gaussian", "dropout"):
            raise ModelError(f"pretrain must be 'gaussian', 'dropout' or none, not {self.pretrain!r}")
        if not 0.0 < float(self.pretrain_keep) <= 1.0:
            raise ModelError(f"pretrain_keep is a keep probability in (0, 1], not {self.pretrain_keep}")
        if float(self.pretrain_noise) < 0:
            raise ModelError("pretrain_noise (a stddev) must be >= 0")
        if float(self.sparsity) < 0:
            raise ModelError("sparsity (a loss weight) must be >= 0")
        if not 0.0 < float(self.sparsity_target) < 1.0:
            raise ModelError("sparsity_target (a mean activation) must be strictly between 0 and 1")
        if self.select_by not in ("val_map", "val_loss"):
            raise ModelError(f"select_by must be 'val_map' or 'val_loss', not {self.select_by!r}")
        if float(self.balance) < 0 or float(self.decorrelation) < 0:
            raise ModelError("balance and decorrelation (loss weights) must be >= 0")
        check_coding(self.coding)
        if self.conv and not self.filters:
            raise ModelError("a convolutional encoder (--conv) needs filters, e.g. --param filters=32x64")
        if self.conv and not self.hidden:
            raise ModelError("a convolutional encoder (--conv) needs at least one hidden dense layer (--hidden)")
        if self.conv and self.pretrain not in (None, "", "none"):
            raise ModelError("greedy layer-wise pretraining (--pretrain) needs a dense encoder, not --conv")

    def fit(self, images, labels=None, *, context: FitContext | None = None):
        context = context or FitContext()
        self._check_options()
        set_seed(self.seed)
        images = np.asarray(images, dtype=np.float32)
        # with labels, the checkpoint is chosen by validation mAP (labels used for that only);
        # without them (an unlabelled folder), by validation loss with early stopping
        train_x, val_x, retrieval = checkpoint_split(
            images, labels, select_by=self.select_by, fraction=self.validation_split, seed=self.seed
        )
        epochs = self._epochs(len(train_x))
        self.network_ = self._build_network()
        self.device_ = device_description()
        self.pretrain_history_ = []
        pretrain_seconds = 0.0
        if self.pretrain not in (None, "", "none"):
            from semhash.models.pretraining import greedy_pretrain

            started = time.time()
            context.log(f"greedy layer-wise pretraining ({self.pretrain} corruption) on {len(train_x)} images")
            self.pretrain_history_ = greedy_pretrain(
                self.network_,
                train_x,
                corruption=self.pretrain,
                noise_stddev=float(self.pretrain_noise),
                keep_prob=float(self.pretrain_keep),
                epochs=int(self.pretrain_epochs),
                batch_size=int(self.batch_size),
                learning_rate=float(self.learning_rate),
                seed=self.seed,
                verbose=context.verbose,
            )
            pretrain_seconds = time.time() - started
        self.network_.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="binary_crossentropy")
        early_stopping = self.patience if retrieval is None and val_x is not None else 0
        callbacks = training_callbacks(epochs, context.verbose, self.kind, early_stopping)
        selector = None
        if retrieval is not None:
            selector = ValidationRetrieval(
                val_x, *retrieval, self.bits, float(self.select_tolerance), bits_of=self.hash_bits_keras
            )
            callbacks.insert(0, selector)  # first, so the progress bar shows val_map
        if self.coding == "bihalf":  # before the selector: the epoch's hash uses its own medians
            sample = training_sample(train_x, self.seed)
            callbacks.insert(0, MedianThreshold(self.network_.binary_coding, self._preactivations, sample))
        how = "checkpoint by validation mAP" if selector else "early stopping on validation loss"
        context.log(f"training {self.kind} on {len(train_x)} images for {epochs} epochs, {how} ({self.device_})")
        started = time.time()
        self.history_ = fit_network(
            self.network_,
            train_x,
            train_x,
            None if val_x is None else (val_x, val_x),
            epochs=epochs,
            batch_size=self.batch_size,
            callbacks=callbacks,
        )
        self.train_seconds_ = time.time() - started + pretrain_seconds
        self.metrics_ = {}
        if self.history_.get("val_loss"):
            self.metrics_["val_loss"] = float(min(self.history_["val_loss"]))
        if selector is not None and selector.best_epoch >= 0:
            self.metrics_["selected_epoch"] = selector.best_epoch + 1
            self.metrics_["val_map"] = selector.best_map
        if self.coding == "sigmoid":
            self.metrics_.update(code_stats(self.codings(train_x), 0.5))
        else:
            self.metrics_.update(code_stats(self._preactivations(train_x), self.network_.threshold_values()))
        return self

    def _preactivations(self, images) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        out = [np.asarray(self.network_.encode_preactivation(images[s : s + 1024])) for s in range(0, len(images), 1024)]
        return np.concatenate(out) if out else np.zeros((0, int(self.bits)), np.float32)

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
        ops_list: list[dict] = []
        params: dict[str, np.ndarray] = {}
        keras_layers_ops(net.hash_layers(), params, ops_list)  # flatten, dense..., coding: as before for dense encoders
        info = {"kind": self.kind, "coding": self.coding}
        return Hasher(ops_list, params, self.bits, tuple(self.input_shape), net.threshold_values(), info=info)
