"""Greedy layer-wise denoising pretraining of the semantic-hashing autoencoder (Géron ch. 15).

For each encoder layer in turn (the hidden layers, then the ``bits``-unit coding layer) a
shallow autoencoder ``corrupt(x) -> layer -> mirror layer`` is trained to reconstruct its
*clean* input ``x``, where ``x`` is the cached output of the layers trained before it (so the
earlier layers are frozen: they are not even in the graph).  Corruption is additive Gaussian
noise (``noise_stddev``) or dropout (keep probability ``keep_prob``).  The trained weights are
then copied into the stacked :class:`SemanticHashingAutoencoder` — encoder layer i and its
mirror-image decoder layer — which the caller fine-tunes end to end.

The first shallow autoencoder reconstructs pixels in [0, 1] (sigmoid output, binary
cross-entropy); the deeper ones reconstruct non-negative hidden activations with the
decoder's own activation (ReLU by default) and mean squared error, so the copied decoder
layers keep their activations.  The coding layer's shallow autoencoder keeps the large
CodingNoise before its sigmoid, as in the stacked model.  With ``tied=True`` the shallow
decoders are tied too, and only their biases are copied.
"""

from __future__ import annotations

import numpy as np

from semhash.models.keras_common import fit_network, training_callbacks
from semhash.models.tf_common import CodingNoise, keras, ops


@keras.saving.register_keras_serializable(package="semhash")
class ShallowDenoisingAutoencoder(keras.Model):
    """``corrupt -> Dense(units) [-> CodingNoise -> sigmoid] -> Dense(n_inputs)``."""

    def __init__(
        self,
        n_inputs: int,
        units: int,
        activation: str = "relu",
        output_activation: str = "sigmoid",
        corruption: str = "gaussian",
        noise_stddev: float = 0.5,
        keep_prob: float = 0.8,
        coding: bool = False,
        coding_noise: float = 4.0,
        tied: bool = False,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if corruption not in ("gaussian", "dropout"):
            raise ValueError(f"corruption must be 'gaussian' or 'dropout', not {corruption!r}")
        self.n_inputs = int(n_inputs)
        self.units = int(units)
        self.activation = activation
        self.output_activation = output_activation
        self.corruption = corruption
        self.noise_stddev = float(noise_stddev)
        self.keep_prob = float(keep_prob)
        self.coding = bool(coding)
        self.coding_noise = float(coding_noise)
        self.tied = bool(tied)
        self.seed = seed
        if corruption == "gaussian":
            self.corrupt = CodingNoise(self.noise_stddev, seed=seed, name="corrupt")
        else:
            self.corrupt = keras.layers.Dropout(1.0 - self.keep_prob, seed=seed, name="corrupt")
        self.encoder = keras.layers.Dense(self.units, activation=None if self.coding else activation, name="encoder")
        self.noise = CodingNoise(self.coding_noise, seed=None if seed is None else seed + 1, name="coding_noise")
        self.decoder = None if self.tied else keras.layers.Dense(self.n_inputs, activation=output_activation, name="decoder")

    def build(self, input_shape=None):
        self.encoder.build((None, self.n_inputs))
        if self.tied:
            self.decoder_bias = self.add_weight(shape=(self.n_inputs,), initializer="zeros", name="decoder_bias")
        else:
            self.decoder.build((None, self.units))
        self.built = True

    def encode(self, x, training=False):
        h = self.encoder(x)
        if self.coding:
            h = ops.sigmoid(self.noise(h, training=training))
        return h

    def call(self, x, training=False):
        h = self.encode(self.corrupt(x, training=training), training=training)
        if self.tied:
            out = ops.matmul(h, ops.transpose(self.encoder.kernel)) + self.decoder_bias
            return keras.activations.get(self.output_activation)(out)
        return self.decoder(h)

    def get_config(self):
        return {
            **super().get_config(),
            "n_inputs": self.n_inputs,
            "units": self.units,
            "activation": self.activation,
            "output_activation": self.output_activation,
            "corruption": self.corruption,
            "noise_stddev": self.noise_stddev,
            "keep_prob": self.keep_prob,
            "coding": self.coding,
            "coding_noise": self.coding_noise,
            "tied": self.tied,
            "seed": self.seed,
        }


def greedy_pretrain(
    net,
    images: np.ndarray,
    *,
    corruption: str = "gaussian",
    noise_stddev: float = 0.5,
    keep_prob: float = 0.8,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int | None = 0,
    verbose: int = 0,
) -> list[dict[str, list[float]]]:
    """Pretrain ``net`` (a built SemanticHashingAutoencoder) layer by layer in place.

    Returns one Keras history dict per pretrained layer (hidden layers, then coding layer).
    """
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    layers = [*net.encoder_layers, net.coding_layer]
    n_layers = len(layers)
    histories = []
    for i, layer in enumerate(layers):
        is_coding = i == n_layers - 1
        first = i == 0
        shallow = ShallowDenoisingAutoencoder(
            n_inputs=x.shape[1],
            units=layer.units,
            activation=net.activation,
            output_activation="sigmoid" if first else net.activation,
            corruption=corruption,
            noise_stddev=noise_stddev,
            keep_prob=keep_prob,
            coding=is_coding,
            coding_noise=net.noise,
            tied=net.tied,
            seed=None if seed is None else int(seed) + 10 * i,
            name=f"pretrain_{i}",
        )
        shallow.build((None, x.shape[1]))
        shallow.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="binary_crossentropy" if first else "mse",
        )
        callbacks = training_callbacks(epochs, verbose, f"pretrain layer {i + 1}/{n_layers}")
        histories.append(fit_network(shallow, x, x, None, epochs=epochs, batch_size=batch_size, callbacks=callbacks))
        # copy into the stack: encoder layer i and its mirror decoder layer (n_layers - 1 - i)
        layer.set_weights(shallow.encoder.get_weights())
        mirror = n_layers - 1 - i
        if net.tied:
            net.tied_biases[mirror].assign(shallow.decoder_bias)
        else:
            net.decoder_layers[mirror].set_weights(shallow.decoder.get_weights())
        if not is_coding:
            x = np.asarray(shallow.encode(x, training=False), dtype=np.float32)
    return histories
