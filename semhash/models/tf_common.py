"""Shared TensorFlow / Keras pieces: quiet import, seeding, device, the noisy coding layer,
a stderr progress callback.  Importing this module imports TensorFlow."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide oneDNN / CUDA-stub chatter; errors still raise



def _import_tensorflow_quietly():
    """TensorFlow 2.21's C++ start-up logs (oneDNN, CUDA stub) ignore TF_CPP_MIN_LOG_LEVEL
    and go straight to file descriptor 2: silence that descriptor while importing only.
    Python exceptions are unaffected (they are raised after the descriptor is restored)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            stack.callback(lambda: (os.dup2(saved, 2), os.close(saved)))
        except OSError:  # no real stderr descriptor (some notebooks): import loudly
            pass
        import tensorflow  # noqa: F401
        import keras  # noqa: F401


_import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402


def set_seed(seed: int | None) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic, so a seed reproduces."""
    if seed is None:
        return
    keras.utils.set_random_seed(int(seed))
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass


def device_description() -> str:
    """Which device Keras will train on: the first GPU TensorFlow sees, else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU:0 ({details.get('device_name', gpus[0].name)})"
        except Exception:  # pragma: no cover
            return f"GPU:0 ({gpus[0].name})"
    return "CPU"


def training_strategy(devices: "list[str] | None" = None) -> "tf.distribute.Strategy":
    """The tf.distribute strategy to build, compile and fit a model in: a
    ``MirroredStrategy`` (one replica per device, gradients all-reduced each step) when
    TensorFlow sees more than one GPU, else the default strategy (one device).  ``devices``
    names them explicitly (e.g. ``["/cpu:0", "/cpu:1"]`` over logical CPU devices, which is
    how the tests run it without GPUs); two or more make a mirrored strategy."""
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] if len(gpus) > 1 else []
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    return tf.distribute.get_strategy()


def strategy_description(strategy: "tf.distribute.Strategy") -> str:
    """One line saying which devices ``strategy`` trains on."""
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        devices = ", ".join(strategy.extended.worker_devices)
        return f"{strategy.num_replicas_in_sync} devices (MirroredStrategy: {devices})"
    return f"1 device ({device_description()})"


@keras.saving.register_keras_serializable(package="semhash")
class CodingNoise(keras.layers.Layer):
    """Zero-mean Gaussian noise added during training only.

    Keras' GaussianNoise refuses stddev > 1; semantic hashing needs large noise (several
    units) on the coding layer's inputs so the sigmoid codes are pushed to saturate at 0/1.
    """

    def __init__(self, stddev: float = 4.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if stddev < 0:
            raise ValueError("stddev must be >= 0")
        self.stddev = float(stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if training and self.stddev > 0:
            noise = keras.random.normal(ops.shape(inputs), stddev=self.stddev, seed=self.seed_generator)
            return inputs + ops.cast(noise, inputs.dtype)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


class EpochProgress(keras.callbacks.Callback):
    """One tqdm bar over epochs on stderr, showing the latest losses (Keras' own bar goes to
    stdout and prints a line per step)."""

    def __init__(self, epochs: int, enabled: bool = True, description: str = "train"):
        super().__init__()
        self.epochs = epochs
        self.enabled = enabled
        self.description = description
        self.bar = None
        self.started = 0.0

    def on_train_begin(self, logs=None):
        self.started = time.time()
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.epochs, desc=self.description, unit="epoch", file=sys.stderr, leave=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            shown = {k: f"{v:.4f}" for k, v in (logs or {}).items() if "loss" in k or "acc" in k or k.startswith("val_map")}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()


def history_dict(history) -> dict[str, list[float]]:
    return {k: [float(v) for v in vals] for k, vals in (history.history if history else {}).items()}


def dense_ops(layers, params: dict, ops_list: list, activation_of=None) -> None:
    """Append NumPy-inference ops for a sequence of Keras Dense layers."""
    for layer in layers:
        i = len(ops_list)
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        ops_list.append({"op": "dense"})
        params[f"op{i}.kernel"] = kernel
        params[f"op{i}.bias"] = bias
        _append_activation(activation_of(layer) if activation_of else keras.activations.serialize(layer.activation), ops_list)


def activation_op(activation, ops_list: list) -> None:
    """Append the NumPy-inference op of a Keras activation (nothing for a linear one)."""
    _append_activation(keras.activations.serialize(activation), ops_list)


def _append_activation(fn, ops_list: list) -> None:
    """``fn``: a serialized activation (its name, or Keras' dict form)."""
    if isinstance(fn, dict):
        fn = fn.get("config", {}).get("name") or fn.get("class_name")
    if fn not in ("linear", None):
        ops_list.append({"op": "activation", "fn": fn})
