"""Semi-supervised kind (``pretrained-classifier``): unsupervised pretraining, few labels.

With ``pseudo_labels=K`` it needs no labels at all (self-labelling, issue 22): the encoder's
features (unit length) are clustered by k-means into K clusters and the classifier learns
those as its classes, on every training image; the labels given, if any, are not used, and
the reported accuracies are agreement with the clusters.

The lower layers of a model trained without labels (``encoder``: the name of an
``autoencoder`` or ``contrastive`` model in the workspace; its convolution blocks, if any,
and hidden dense layers, weights copied) become the first layers of a classifier
``encoder layers -> Dense(bits) -> CodingNoise -> sigmoid -> softmax``
(:class:`FeatureHashClassifier`).
It is trained on ``labeled_fraction`` (default 10 %) of the labels, a seeded stratified
subset, first with the pretrained layers frozen (``epochs``), then — with ``fine_tune`` —
all layers together at a third of the learning rate (``fine_tune_epochs``,
``fine_tune_learning_rate``).  ``reuse_coding`` also starts the coding layer from the
autoencoder's (when the bit counts match); off by default, because those saturated sigmoid
units pass almost no gradient and the classifier then learns more slowly.  The
``bits``-unit sigmoid layer is the hash (bit = pre-activation > 0), as for
``classifier-hash``.

With ``compare_baselines`` (default) ``fit`` also trains the same architecture from scratch
on the same labelled subset and on all training labels, and ``summary_metrics`` reports the
three test accuracies side by side.  The test set is the fit context's ``test_images`` /
``test_labels`` when given, else the validation split (which early stopping also watches,
so those numbers are slightly optimistic — say so in reports).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from semhash.errors import ModelError
from semhash.models.base import FitContext
from semhash.models.classifier import (
    SigmoidClassifierHashModel,
    _sigmoid,
    accuracy,
    check_labels,
    confusion_matrix,
    context_test_set,
    fit_classifier,
    n_classes_of,
    predict_labels,
)
from semhash.models.keras_common import code_stats, conv_feature_layers, labeled_subset, stratified_validation_split
from semhash.models.tf_common import CodingNoise, device_description, keras, ops, set_seed


@keras.saving.register_keras_serializable(package="semhash")
class DenseHashClassifier(keras.Model):
    """``flatten -> hidden Dense layers -> Dense(bits) -> CodingNoise -> sigmoid -> softmax``;
    ``frozen`` hidden layers are not trained.  The network of models saved before
    :class:`FeatureHashClassifier` replaced it; kept so that their ``.keras`` files load."""

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        hidden: Sequence[int] = (500, 300),
        activation: str = "relu",
        bits: int = 30,
        n_classes: int = 10,
        noise: float = 4.0,
        frozen: bool = False,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.bits = int(bits)
        self.n_classes = int(n_classes)
        self.noise = float(noise)
        self.seed = seed
        self.flatten = keras.layers.Flatten(name="flatten")
        self.hidden_layers = [
            keras.layers.Dense(h, activation=activation, name=f"encoder_{i}") for i, h in enumerate(self.hidden)
        ]
        self.coding_layer = keras.layers.Dense(self.bits, name="coding")
        self.coding_noise = CodingNoise(self.noise, seed=seed, name="coding_noise")
        self.output_layer = keras.layers.Dense(self.n_classes, activation="softmax", name="output")
        self.frozen = bool(frozen)

    @property
    def frozen(self) -> bool:
        return self._frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        self._frozen = bool(value)
        for layer in self.hidden_layers:
            layer.trainable = not self._frozen

    def build(self, input_shape=None):
        n = int(np.prod(self.image_shape))
        self.flatten.build((None, *self.image_shape))
        for layer in self.hidden_layers:
            layer.build((None, n))
            n = layer.units
        self.coding_layer.build((None, n))
        self.output_layer.build((None, self.bits))
        self.built = True

    def encode_preactivation(self, x, training=False):
        h = self.flatten(x)
        for layer in self.hidden_layers:
            h = layer(h)
        return self.coding_layer(h)

    def call(self, x, training=False):
        pre = self.encode_preactivation(x, training=training)
        return self.output_layer(ops.sigmoid(self.coding_noise(pre, training=training)))

    def hash_layers(self) -> list:
        return [self.flatten, *self.hidden_layers, self.coding_layer]

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "hidden": list(self.hidden),
            "activation": self.activation,
            "bits": self.bits,
            "n_classes": self.n_classes,
            "noise": self.noise,
            "frozen": self.frozen,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="semhash")
class FeatureHashClassifier(keras.Model):
    """``conv blocks (filters) -> flatten -> hidden Dense layers`` (the feature stack of
    :func:`~semhash.models.keras_common.conv_feature_layers`, as the ``contrastive`` kind
    and a convolutional autoencoder build it) ``-> Dense(bits) -> CodingNoise -> sigmoid ->
    softmax``; ``frozen`` feature layers are not trained (batch norm then runs in inference
    mode)."""

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        filters: Sequence[int] = (),
        hidden: Sequence[int] = (500, 300),
        batch_norm: bool = False,
        activation: str = "relu",
        bits: int = 30,
        n_classes: int = 10,
        noise: float = 4.0,
        frozen: bool = False,
        seed: int | None = None,
        global_pool: bool = False,
        input_blur: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.global_pool = bool(global_pool)
        self.input_blur = float(input_blur)
        self.filters = tuple(int(f) for f in filters or ())
        self.hidden = tuple(int(h) for h in hidden or ())
        self.batch_norm = bool(batch_norm)
        self.activation = activation
        self.bits = int(bits)
        self.n_classes = int(n_classes)
        self.noise = float(noise)
        self.seed = seed
        self.feature_layers = conv_feature_layers(
            self.filters, self.hidden, self.batch_norm, activation, self.global_pool, self.input_blur, self.image_shape[-1]
        )
        self.coding_layer = keras.layers.Dense(self.bits, name="coding")
        self.coding_noise = CodingNoise(self.noise, seed=seed, name="coding_noise")
        self.output_layer = keras.layers.Dense(self.n_classes, activation="softmax", name="output")
        self.frozen = bool(frozen)

    @property
    def frozen(self) -> bool:
        return self._frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        self._frozen = bool(value)
        for layer in self.feature_layers:
            layer.trainable = not self._frozen and layer.name != "input_blur"  # a fixed filter, never trained

    def build(self, input_shape=None):
        shape = (None, *self.image_shape)
        for layer in self.feature_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.coding_layer.build(shape)
        self.output_layer.build((None, self.bits))
        self.built = True

    def encode_preactivation(self, x, training=False):
        h = x
        for layer in self.feature_layers:
            h = layer(h, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(h)
        return self.coding_layer(h)

    def call(self, x, training=False):
        pre = self.encode_preactivation(x, training=training)
        return self.output_layer(ops.sigmoid(self.coding_noise(pre, training=training)))

    def hash_layers(self) -> list:
        return [*self.feature_layers, self.coding_layer]

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "filters": list(self.filters),
            "hidden": list(self.hidden),
            "batch_norm": self.batch_norm,
            "activation": self.activation,
            "bits": self.bits,
            "n_classes": self.n_classes,
            "noise": self.noise,
            "frozen": self.frozen,
            "seed": self.seed,
            "global_pool": self.global_pool,
            "input_blur": self.input_blur,
        }


ENCODER_KINDS = ("autoencoder", "contrastive")


def encoder_spec(source) -> dict:
    """The feature stack of a trained ``autoencoder`` or ``contrastive`` model:
    {"filters", "hidden", "batch_norm", "activation", "weights": {layer name in
    :func:`conv_feature_layers`: weights}}."""
    net = source.network_
    weights = {}
    if source.kind == "autoencoder":
        filters = net.filters if net.conv else ()
        for layer in net.conv_layers:
            if layer.get_weights():
                weights[layer.name] = layer.get_weights()
        for i, layer in enumerate(net.encoder_layers):
            weights[f"dense_{i}"] = layer.get_weights()
        return {
            "filters": filters, "hidden": net.hidden, "batch_norm": False, "global_pool": False, "input_blur": 0.0,
            "activation": net.activation, "weights": weights,
        }  # fmt: skip
    for layer in net.feature_layers:
        if layer.get_weights():
            weights[layer.name] = layer.get_weights()
    return {
        "filters": net.filters, "hidden": net.hidden, "batch_norm": net.batch_norm,
        "global_pool": getattr(net, "global_pool", False), "input_blur": getattr(net, "input_blur", 0.0),
        "activation": "relu", "weights": weights,
    }  # fmt: skip


class PretrainedClassifierHashModel(SigmoidClassifierHashModel):
    kind = "pretrained-classifier"
    description = "classifier on the encoder layers of a trained autoencoder or contrastive model, few labels; sigmoid layer hashes"
    STATE = [
        "metrics_", "confusion_", "confusion_of_", "class_names_", "encoder_info_", "reused_coding_",
        "history_", "train_seconds_", "baseline_seconds_", "device_",
    ]  # fmt: skip

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),
        bits: int = 30,
        encoder: str | None = None,
        labeled_fraction: float = 0.1,
        noise: float = 4.0,
        reuse_coding: bool = False,
        fine_tune: bool = True,
        fine_tune_epochs: int = 30,
        fine_tune_learning_rate: float | None = None,
        compare_baselines: bool = True,
        epochs: int = 60,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        validation_split: float = 0.1,
        patience: int = 10,
        seed: int = 0,
        pseudo_labels: int = 0,
    ):
        self.input_shape = input_shape
        self.bits = bits
        self.encoder = encoder
        self.pseudo_labels = pseudo_labels
        self.labeled_fraction = labeled_fraction
        self.noise = noise
        self.reuse_coding = reuse_coding
        self.fine_tune = fine_tune
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.compare_baselines = compare_baselines
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_split = validation_split
        self.patience = patience
        self.seed = seed

    @property
    def fine_tune_lr(self) -> float:
        """The fine-tuning learning rate: ``fine_tune_learning_rate``, else learning_rate / 3."""
        if self.fine_tune_learning_rate is not None:
            return float(self.fine_tune_learning_rate)
        return float(self.learning_rate) / 3.0

    # -- the encoder ----------------------------------------------------------------------
    def _load_encoder(self, context: FitContext):
        """-> (encoder spec (see :func:`encoder_spec`), coding weights, model directory)."""
        if not self.encoder:
            raise ModelError(
                f"model kind {self.kind!r} needs --encoder NAME: a trained {' or '.join(ENCODER_KINDS)} model in the workspace"
            )
        if context.workspace is None:
            raise ModelError(f"model kind {self.kind!r} needs a workspace to find the encoder {self.encoder!r}")
        info = context.workspace.model(self.encoder)
        if info.kind not in ENCODER_KINDS:
            raise ModelError(
                f"encoder {self.encoder!r} is a {info.kind!r} model; {self.kind} reuses the layers of "
                f"an {' or a '.join(repr(k) for k in ENCODER_KINDS)} model"
            )
        from semhash.models import get_kind

        source = get_kind(info.kind).load(info.directory)
        shape = tuple(int(s) for s in source.input_shape)
        if shape != tuple(int(s) for s in self.input_shape):
            raise ModelError(
                f"encoder {self.encoder!r} takes {shape} images, this dataset has {tuple(self.input_shape)}"
            )
        coding = [np.asarray(w) for w in source.network_.coding_layer.get_weights()]
        return encoder_spec(source), coding, str(info.directory)

    def _network(self, spec: dict, n_classes: int, frozen: bool = False) -> FeatureHashClassifier:
        net = FeatureHashClassifier(
            image_shape=self.input_shape,
            filters=spec["filters"],
            hidden=spec["hidden"],
            batch_norm=spec["batch_norm"],
            global_pool=spec["global_pool"],
            input_blur=spec["input_blur"],
            activation=spec["activation"],
            bits=self.bits,
            n_classes=n_classes,
            noise=self.noise,
            frozen=frozen,
            seed=self.seed,
        )
        net.build((None, *tuple(self.input_shape)))
        return net

    def _cluster_labels(self, images: np.ndarray, spec: dict, k: int, context: FitContext) -> np.ndarray:
        """Self-labelling: k-means (seeded) of the encoder's features, unit length -> one
        cluster number per image (the classes the classifier head then learns)."""
        from sklearn.cluster import MiniBatchKMeans

        net = self._network(spec, k, frozen=True)
        layers = {layer.name: layer for layer in net.feature_layers}
        for name, w in spec["weights"].items():
            layers[name].set_weights(w)
        features = []
        for start in range(0, len(images), 1024):
            h = images[start : start + 1024]
            for layer in net.feature_layers:
                h = layer(h, training=False) if isinstance(layer, keras.layers.BatchNormalization) else layer(h)
            features.append(np.asarray(h, dtype=np.float32).reshape(len(h), -1))
        x = np.concatenate(features)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        clusters = MiniBatchKMeans(n_clusters=k, random_state=int(self.seed), n_init=3, batch_size=4096).fit_predict(x)
        sizes = np.bincount(clusters, minlength=k)
        context.log(f"self-labelling: {k} k-means clusters of {self.encoder!r}'s features, sizes {sizes.min()}-{sizes.max()}")
        self.cluster_sizes_ = sizes.tolist()
        return clusters.astype(np.int64)

    # -- learning -------------------------------------------------------------------------
    def fit(self, images, labels=None, *, context: FitContext | None = None):
        context = context or FitContext()
        images = np.asarray(images, dtype=np.float32)
        spec, coding, encoder_dir = self._load_encoder(context)
        pseudo = int(self.pseudo_labels)
        if pseudo < 0 or pseudo == 1:
            raise ModelError("pseudo_labels must be 0 (use the labels) or a number of clusters >= 2")
        if pseudo:  # self-labelling: the encoder's own k-means clusters are the classes; labels unused
            labels = self._cluster_labels(images, spec, pseudo, context)
            context = FitContext(**{**vars(context), "class_names": [f"cluster {i}" for i in range(pseudo)],
                                    "test_images": None, "test_labels": None})  # fmt: skip
        else:
            labels = check_labels(self.kind, images, labels)
        set_seed(self.seed)
        train_rows, val_rows = stratified_validation_split(labels, self.validation_split, self.seed)
        fraction = 1.0 if pseudo else self.labeled_fraction
        subset_rows = train_rows[labeled_subset(labels[train_rows], fraction, self.seed)]
        n_classes = n_classes_of(labels, context)
        self.class_names_ = list(context.class_names or [str(i) for i in range(n_classes)])
        self.encoder_info_ = {
            "name": self.encoder, "directory": encoder_dir, "filters": list(spec["filters"]), "hidden": list(spec["hidden"]),
            "batch_norm": bool(spec["batch_norm"]), "global_pool": bool(spec["global_pool"]), "input_blur": float(spec["input_blur"]),
            "activation": spec["activation"],
        }  # fmt: skip
        val = (images[val_rows], labels[val_rows]) if len(val_rows) else None
        test_x, test_y = context_test_set(context)
        test_name = "test"
        if test_x is None:
            test_x, test_y, test_name = images[val_rows], labels[val_rows], "validation"
        self.device_ = device_description()
        common = dict(batch_size=self.batch_size, patience=self.patience, verbose=context.verbose)
        subset = (images[subset_rows], labels[subset_rows])
        context.log(
            f"training {self.kind} on {len(subset_rows)} {'self-labelled' if pseudo else 'labelled'} images ({fraction:g} of "
            f"{len(train_rows)}) over the frozen layers of {self.encoder!r} ({self.device_})"
        )
        started = time.time()
        # 1. pretrained layers frozen
        self.network_ = self._network(spec, n_classes, frozen=True)
        layers = {layer.name: layer for layer in self.network_.feature_layers}
        for name, w in spec["weights"].items():
            layers[name].set_weights(w)
        self.reused_coding_ = bool(self.reuse_coding and coding[0].shape[1] == int(self.bits))
        if self.reused_coding_:
            self.network_.coding_layer.set_weights(coding)
        self.history_ = fit_classifier(
            self.network_, subset, val, epochs=self.epochs, learning_rate=self.learning_rate,
            description=f"{self.kind} (frozen)", **common,
        )  # fmt: skip
        self.metrics_ = {"labeled_images": int(len(subset_rows)), "test_set": test_name}
        if pseudo:  # the accuracies below are agreement with the clusters, not with any label
            self.metrics_["pseudo_labels"] = {"clusters": pseudo, "sizes": self.cluster_sizes_}
        self.metrics_["accuracy_frozen"] = accuracy(self.network_, test_x, test_y)
        # 2. fine-tune everything at a lower learning rate
        if self.fine_tune and self.fine_tune_epochs:
            self.network_.frozen = False
            tuned = fit_classifier(
                self.network_, subset, val, epochs=self.fine_tune_epochs, learning_rate=self.fine_tune_lr,
                description=f"{self.kind} (fine-tune)", **common,
            )  # fmt: skip
            self.history_ = {k: v + tuned.get(k, []) for k, v in self.history_.items()}
            self.metrics_["accuracy_fine_tuned"] = accuracy(self.network_, test_x, test_y)
        self.train_seconds_ = time.time() - started
        self.metrics_["accuracy"] = accuracy(self.network_, test_x, test_y)
        self.confusion_ = confusion_matrix(test_y, predict_labels(self.network_, test_x), n_classes).tolist()
        self.confusion_of_ = test_name
        # 3. the same architecture from scratch: same labelled subset, then every label
        if self.compare_baselines and not pseudo:
            for key, rows in (("accuracy_scratch_same_labels", subset_rows), ("accuracy_scratch_all_labels", train_rows)):
                set_seed(self.seed)
                baseline = self._network(spec, n_classes, frozen=False)
                fit_classifier(
                    baseline, (images[rows], labels[rows]), val, learning_rate=self.learning_rate,
                    epochs=self.epochs + (self.fine_tune_epochs if self.fine_tune else 0),
                    description=f"baseline {key.rsplit('_', 2)[1]} labels", **common,
                )  # fmt: skip
                self.metrics_[key] = accuracy(baseline, test_x, test_y)
                context.log(f"{key}: {self.metrics_[key]:.4f}")
            self.baseline_seconds_ = time.time() - started - self.train_seconds_
        self.metrics_.update(code_stats(_sigmoid(self.preactivations(images[train_rows])), 0.5))
        return self

    # -- use ------------------------------------------------------------------------------
    def hasher_info(self) -> dict[str, Any]:
        return {"kind": self.kind, "coding": "sigmoid", "encoder": self.encoder}
