"""What the Keras model kinds share (importing this module imports TensorFlow).

* :class:`KerasHashModel`: a :class:`~semhash.models.base.HashModel` whose ``network_`` is a
  Keras model, saved as ``model.keras`` + ``params.json`` + ``fit_state.json`` (the fitted
  non-weight attributes named in ``STATE``: metrics, history, thresholds...);
* the fit scaffolding: progress bar + early stopping callbacks, and ``network.fit`` with the
  options every kind uses (shuffled, silent) -> history dict;
* seeded (stratified) hold-out splits and labelled subsets;
* Keras layers -> :class:`semhash.inference.Hasher` ops, and statistics of the codes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from semhash.errors import ModelError
from semhash.models.base import HashModel, _jsonable, save_params_json
from semhash.models.tf_common import CodingNoise, EpochProgress, activation_op, dense_ops, history_dict, keras, ops


class KerasHashModel(HashModel):
    """A kind whose fitted model is a Keras network in ``network_``.

    ``save`` writes ``model.keras``, ``params.json`` and ``fit_state.json`` (the attributes
    named in ``STATE`` that the model has); ``load`` rebuilds the kind from ``params.json``,
    loads the network and restores the fitted attributes.
    """

    uses_tensorflow = True
    STATE: ClassVar[list[str]] = []

    def summary_metrics(self) -> dict[str, Any]:
        return dict(getattr(self, "metrics_", {}))

    def save(self, directory: Path) -> list[Path]:
        directory = Path(directory)
        path = directory / "model.keras"
        self.network_.save(path)
        state = save_fit_state(self, directory, self.STATE)
        return [path, save_params_json(self, directory), state]

    @classmethod
    def load(cls, directory: Path):
        directory = Path(directory)
        params = json.loads((directory / "params.json").read_text())
        model = cls(**params)
        model.network_ = keras.models.load_model(directory / "model.keras")
        load_fit_state(model, directory)
        return model


# --------------------------------------------------------------------------- fitting
def training_callbacks(epochs: int, verbose: int, description: str, early_stopping: int = 0) -> list:
    """The progress bar, then (``early_stopping`` = patience > 0) early stopping on the
    validation loss with the best weights restored."""
    callbacks = [EpochProgress(epochs, enabled=verbose > 0, description=description)]
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=early_stopping, restore_best_weights=True))
    return callbacks


def fit_network(net, x, y, validation_data, *, epochs: int, batch_size: int, callbacks: list) -> dict[str, list[float]]:
    """``net.fit`` shuffled and silent (progress goes through the callbacks) -> history dict."""
    history = net.fit(
        x,
        y,
        validation_data=validation_data,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    return history_dict(history)


class ValidationRetrieval(keras.callbacks.Callback):
    """Choose the checkpoint by retrieval quality on a labelled validation split.

    Labels are used for this choice only, never by the loss.  After each epoch (or each of
    ``check_epochs``, 0-based, when given) the validation images are hashed
    (``bits_of(images)`` -> 0/1 array, the kind's own Keras hashing) and ranked as queries
    against up to 5,000 training images; at the end the weights of the LATEST checked epoch
    whose validation mAP is within ``tolerance`` (relative) of the best are restored: among
    near-best-mAP checkpoints the most trained one has the higher precision within radius 2
    (mAP peaks early while P@r2 keeps rising).
    """

    def __init__(self, val_x, val_y, db_x, db_y, bits: int, tolerance: float = 0.01, *, bits_of, check_epochs=None):
        super().__init__()
        self.val_x, self.val_y, self.db_x, self.db_y = val_x, val_y, db_x, db_y
        self.bits, self.tolerance = bits, tolerance
        self.bits_of = bits_of
        self.check_epochs = None if check_epochs is None else {int(e) for e in check_epochs}
        self.maps: list[float] = []
        self.epochs_checked: list[int] = []
        self.snapshots: list = []
        self.best_epoch = -1
        self.best_map = float("nan")

    def _codes(self, images):
        from semhash.hashing import bits_to_codes

        return bits_to_codes(np.asarray(self.bits_of(images)).astype(np.uint8))

    def on_epoch_end(self, epoch, logs=None):
        from semhash.metrics import retrieval_metrics

        if self.check_epochs is not None and epoch not in self.check_epochs:
            return
        r = retrieval_metrics(self._codes(self.val_x), self.val_y, self._codes(self.db_x), self.db_y, self.bits, radii=(2,))
        self.maps.append(float(r["map"]))
        self.epochs_checked.append(int(epoch))
        if logs is not None:
            logs["val_map"] = float(r["map"])
            logs["val_precision_r2"] = float(r["neighbourhoods"][2]["precision_all"])
        self.snapshots.append(self.model.get_weights())  # ~4.5 MB an epoch at 784-500-300-30

    def on_train_end(self, logs=None):
        maps = np.asarray(self.maps)
        if np.isfinite(maps).any():  # (no mAP without a query that has a relevant image)
            best = int(np.flatnonzero(maps >= np.nanmax(maps) * (1.0 - self.tolerance))[-1])
            self.best_epoch, self.best_map = self.epochs_checked[best], float(maps[best])
            self.model.set_weights(self.snapshots[best])
        self.snapshots = []


def spaced_epochs(epochs: int, checks: int) -> list[int]:
    """At most ``checks`` epochs (0-based) spread evenly over ``epochs``, the last included."""
    if epochs <= checks:
        return list(range(epochs))
    return sorted({int(round(e)) for e in np.linspace(epochs - 1, 0, checks, endpoint=False)[::-1]})


# --------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="semhash")
class GaussianBlurKernel(keras.initializers.Initializer):
    """A fixed Gaussian low-pass kernel (kh, kw, C, C) of stddev ``sigma`` pixels, each
    channel blurred on its own: the weights of a non-trainable Conv2D in front of an encoder."""

    def __init__(self, sigma: float):
        self.sigma = float(sigma)

    def __call__(self, shape, dtype=None):
        size, _, channels_in, channels_out = shape
        offsets = np.arange(size) - (size - 1) / 2.0
        g = np.exp(-(offsets**2) / (2.0 * self.sigma**2))
        g2 = np.outer(g, g) / np.outer(g, g).sum()
        kernel = g2[:, :, None, None] * np.eye(channels_in, channels_out)[None, None]
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"sigma": self.sigma}


def input_blur_layer(sigma: float, channels: int):
    """A non-trainable Gaussian blur (``sigma`` pixels; kernel 2*ceil(2 sigma)+1 wide) as a
    plain 'same' Conv2D named ``input_blur``: it exports to the Hasher's conv2d op."""
    size = 2 * int(np.ceil(2.0 * float(sigma))) + 1
    return keras.layers.Conv2D(
        int(channels), size, padding="same", kernel_initializer=GaussianBlurKernel(sigma), trainable=False, name="input_blur",
    )  # fmt: skip


def conv_feature_layers(
    filters,
    hidden,
    batch_norm: bool = True,
    activation: str = "relu",
    global_pool: bool = False,
    input_blur: float = 0.0,
    channels: int = 1,
    downsample: str = "pool",
) -> list:
    """``[Conv2D 3x3 'same' -> (BatchNorm) -> ReLU -> MaxPool 2x2]`` per entry of ``filters``
    (with ``downsample="stride"``: ``Conv2D 3x3 stride 2`` and no pooling, a quarter of the
    multiplications),
    flatten (or, with ``global_pool``, the mean over the positions of the last feature map:
    less sensitive to where in the image a pattern sits), then ``Dense(h)`` + ``activation``
    per entry of ``hidden``: a feature stack (``filters=()`` makes it a dense network on the
    pixels) whose every layer exports to the NumPy Hasher.  Layer names are fixed (conv_i,
    bn_i, relu_i, pool_i, flatten or global_pool, dense_i) so weights can be copied by name
    into a network built by the same call.  ``input_blur`` > 0 puts a fixed Gaussian blur of
    that many pixels (``channels`` in, the same out) in front: a low-pass filter that makes
    the features, and so the bits, change less when the image moves by a pixel."""
    layers: list = []
    if input_blur:
        layers.append(input_blur_layer(input_blur, channels))
    if downsample not in ("pool", "stride"):
        raise ModelError(f"downsample must be 'pool' or 'stride', not {downsample!r}")
    for i, f in enumerate(filters):
        strides = 2 if downsample == "stride" else 1
        layers.append(keras.layers.Conv2D(int(f), 3, strides=strides, padding="same", name=f"conv_{i}"))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(name=f"bn_{i}"))
        layers.append(keras.layers.Activation("relu", name=f"relu_{i}"))
        if downsample == "pool":
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool_{i}"))
    if global_pool and filters:
        layers.append(keras.layers.GlobalAveragePooling2D(name="global_pool"))
    else:
        layers.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(hidden):
        layers.append(keras.layers.Dense(int(units), activation=activation, name=f"dense_{i}"))
    return layers


# --------------------------------------------------------------------------- splits
def _validation_split(images: np.ndarray, fraction: float, seed: int):
    """Seeded random hold-out for early stopping; (train, None) when fraction is 0."""
    if not fraction or len(images) < 10:
        return images, None
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    n_val = max(1, int(round(len(images) * fraction)))
    return images[order[n_val:]], images[order[:n_val]]


def checkpoint_split(images: np.ndarray, labels, *, select_by: str, fraction: float, seed: int):
    """The hold-out that chooses a checkpoint -> ``(train_x, val_x, retrieval)``.

    With labels and ``select_by == "val_map"``: a stratified split, and ``retrieval`` =
    ``(val_y, db_x, db_y)`` for :class:`ValidationRetrieval` (the validation labels and up to
    5,000 training images with theirs; labels choose the checkpoint, nothing else).  Without
    labels, or where a few images per class leave no validation image (a tiny labelled
    folder), a random hold-out (``val_x`` None when there is none) for a label-free criterion
    and ``retrieval`` None."""
    if select_by == "val_map" and labels is not None and fraction:
        labels = np.asarray(labels)
        train_rows, val_rows = stratified_validation_split(labels, fraction, seed)
        if len(val_rows):
            db = np.random.default_rng(seed).choice(len(train_rows), min(5000, len(train_rows)), replace=False)
            train_x = images[train_rows]
            return train_x, images[val_rows], (labels[val_rows], train_x[db], labels[train_rows][db])
    train_x, val_x = _validation_split(images, fraction, seed)
    return train_x, val_x, None


def training_sample(images: np.ndarray, seed: int, size: int = 5000) -> np.ndarray:
    """A seeded sample of at most ``size`` training images (bi-half medians are taken on it)."""
    return images[np.random.default_rng(seed).choice(len(images), min(size, len(images)), replace=False)]


def stratified_validation_split(labels: np.ndarray, fraction: float, seed: int):
    """Seeded hold-out stratified by label -> (train_rows, val_rows); val_rows empty when
    ``fraction`` is 0.  Every class keeps at least one training row."""
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    if not fraction or len(labels) < 10:
        return rows, rows[:0]
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = min(int(round(len(members) * fraction)), len(members) - 1)
        val.extend(members[:n_val])
    val = np.sort(np.asarray(val, dtype=np.int64))
    return np.setdiff1d(rows, val), val


def labeled_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions of a seeded stratified ``fraction`` of ``labels`` (at least one per class)."""
    labels = np.asarray(labels)
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ModelError(f"labeled_fraction must be in (0, 1], not {fraction}")
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed + 1)
    keep = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        keep.extend(members[: max(1, int(round(len(members) * fraction)))])
    return np.sort(np.asarray(keep, dtype=np.int64))


# --------------------------------------------------------------------------- fitted state and codes
def code_stats(values: np.ndarray, threshold) -> dict[str, float]:
    """Headline numbers about the bits: mean fraction of ones, balance (1 = every bit is
    1 for half the images, 0 = constant bits), and for sigmoid codings the fraction of
    activations within 0.1 of 0 or 1 (how saturated, i.e. how little rounding loses)."""
    values = np.asarray(values, dtype=np.float64)
    bits = values > np.asarray(threshold)
    ones = bits.mean(axis=0) if len(bits) else np.zeros(values.shape[1])
    stats = {
        "bits_mean_ones": float(ones.mean()),
        "bits_balance": float((2.0 * np.minimum(ones, 1.0 - ones)).mean()),
        "bits_constant": int(np.sum((ones == 0) | (ones == 1))),
    }
    if np.isscalar(threshold) and float(threshold) == 0.5 and values.min() >= 0 and values.max() <= 1:
        stats["codings_saturated"] = float(np.mean((values < 0.1) | (values > 0.9)))
    return stats


def save_fit_state(model: HashModel, directory: Path, names: list[str], extra: dict | None = None) -> Path:
    """Write fitted non-weight attributes (those present among ``names``) to fit_state.json."""
    state = {name: getattr(model, name) for name in names if hasattr(model, name)}
    state.update(extra or {})
    path = Path(directory) / "fit_state.json"
    path.write_text(json.dumps(state, indent=1, default=_state_jsonable))
    return path


def load_fit_state(model: HashModel, directory: Path) -> dict:
    path = Path(directory) / "fit_state.json"
    if not path.exists():
        return {}
    state = json.loads(path.read_text())
    for name, value in state.items():
        if name.endswith("_"):
            setattr(model, name, value)
    return state


def _state_jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    return _jsonable(value)


# --------------------------------------------------------------------------- export
def keras_layers_ops(layers, params: dict, ops_list: list) -> None:
    """Append Hasher ops for Keras layers run in sequence (inference mode): Flatten, Dense,
    Conv2D, MaxPooling2D, GlobalAveragePooling2D, BatchNormalization, Activation; Dropout, CodingNoise and the
    random-augmentation layers are identities at inference and are skipped."""
    for layer in layers:
        if isinstance(layer, _INFERENCE_IDENTITY):
            continue
        i = len(ops_list)
        if isinstance(layer, keras.layers.Flatten):
            ops_list.append({"op": "flatten"})
            continue
        if isinstance(layer, keras.layers.Dense):
            dense_ops([layer], params, ops_list)
            continue
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.Conv2DTranspose):
            if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1 or layer.data_format != "channels_last":
                raise ModelError(f"layer {layer.name}: only plain channels-last convolutions export")
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            ops_list.append({"op": "conv2d", "strides": [int(s) for s in layer.strides], "padding": layer.padding})
            params[f"op{i}.kernel"] = kernel
            params[f"op{i}.bias"] = bias
            activation_op(layer.activation, ops_list)
            continue
        if isinstance(layer, keras.layers.MaxPooling2D):
            ops_list.append(
                {
                    "op": "maxpool2d",
                    "pool": [int(p) for p in layer.pool_size],
                    "strides": [int(s) for s in layer.strides],
                    "padding": layer.padding,
                }
            )
            continue
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            if layer.data_format != "channels_last" or layer.keepdims:
                raise ModelError(f"layer {layer.name}: only channels-last global pooling without keepdims exports")
            ops_list.append({"op": "globalavgpool"})
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (np.asarray(w) for w in layer.get_weights())
            ops_list.append({"op": "batchnorm", "epsilon": float(layer.epsilon)})
            for name, value in (("gamma", gamma), ("beta", beta), ("mean", mean), ("variance", var)):
                params[f"op{i}.{name}"] = value
            continue
        if isinstance(layer, keras.layers.Activation):
            activation_op(layer.activation, ops_list)
            continue
        raise ModelError(f"layer {layer.name} ({type(layer).__name__}) cannot be exported to the NumPy hasher")


_INFERENCE_IDENTITY = (
    keras.layers.Dropout,
    CodingNoise,
    keras.layers.GaussianNoise,
    keras.layers.RandomTranslation,
    keras.layers.RandomFlip,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
)
