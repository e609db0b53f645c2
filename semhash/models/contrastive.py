"""Unsupervised contrastive hashing kind (``contrastive``): two views of an image, one code.

A small CNN (``[Conv2D 3x3 'same' -> BatchNorm -> ReLU -> MaxPool 2x2]`` per entry of
``filters``, flatten, ``Dense(dense_units)`` ReLU, ``Dense(bits)``: the coding
pre-activations) is trained without labels so that two random views of one image get the
same code and different images get different codes:

* every step draws two random views of each image of the batch inside the TensorFlow graph
  (:mod:`semhash.models.augment`: rotation, scaling, shift, contrast, pixel noise, a light
  blur, cutout, and a left-right mirror only with ``flip=True``, as ``classifier-hash``
  decides it: right for clothing, wrong for digits; and the edits a copy goes through:
  ``brightness`` 0.15, ``view_gamma`` 0.2, ``resample`` 0.5, ``jpeg`` 0.5 - issue 22: on
  Fashion-MNIST a copy resized 2x, brightened and re-encoded keeps its code within radius 2
  for 98.8% of images instead of 92.4%, mAP +0.026; docs/BENCHMARKS.md);
* both views pass through the network in one batch; the coding layer
  (:class:`semhash.models.codings.BinaryCoding`, ``coding``: ``bihalf`` (default: each bit
  split half/half over the batch), a straight-through ``sign`` or the noisy ``sigmoid`` of
  the default model) makes the codings binary during training, so the loss sees the bits
  the hash will have;
* the loss is NT-Xent (SimCLR; CIBHash applies it to binary codes) on the codes mapped to
  {-1, 1} and scaled to unit length (cosine similarity = 1 - 2 Hamming / bits): for each of
  the 2B views the other view of its image must be the most similar among the 2B - 1 others,
  at ``temperature``;
* with ``queue_size`` > 0 (default 2,048) a second NT-Xent term (NNCLR): the nearest
  neighbour of a view among earlier images is the positive of the other view, which pulls
  different images of one kind together (``neighbour_weight``);
* ``alignment`` * mean squared difference of the two views' tanh(pre-activations) asks the
  views for the same pre-activations, not only the same signs (fewer bits near the threshold
  flip when an image is re-saved or moved); ``balance`` * mean_j (batch mean of the j-th
  code)^2 and ``decorrelation`` * mean squared off-diagonal covariance of the codes keep the
  bits balanced and decorrelated (bi-half balances by construction);
* ``bit_margin`` (off): a hinge keeping each bit of the two views on the same side of the
  batch median by half the bit's spread (measured: +0.010 mAP on Fashion-MNIST, but it
  collapsed mnist-5k's training, so it is off);
* Adam with a cosine-decayed learning rate over ``train_steps`` optimizer steps of batch
  ``batch_size`` (rounded up to whole epochs; ``epochs`` overrides): the cost of training is
  its steps, the same on 3,600 images as on 54,000;
* ``final_rotation="itq"`` (default): after training, an ITQ rotation of the coding
  pre-activations (Gong & Lazebnik) is folded into the coding layer, so the signs lose the
  least (issue 22: mAP 0.542 -> 0.554 on Fashion-MNIST, 0.842 -> 0.861 on mnist-5k, with the
  copies' edits in the views).

The defaults are the best configuration of the experiment log in
``docs/benchmarks/contrastive_experiments.json`` (docs/BENCHMARKS.md, issue 13), with the
views and the rotation of issue 22 (``docs/benchmarks/contrastive_copy_views_*.json``).

Checkpoint choice, as the default model does it: when the training data has labels, a
stratified ``validation_split`` is carved out of the training images and, after every epoch,
its images are hashed and ranked against (up to 5,000) training images; the latest epoch
within ``select_tolerance`` of the best validation mAP is kept.  The labels are used for
that choice only.  Without labels (an unlabelled folder) the label-free criterion is the
contrastive loss of the validation images' hard codes under fixed random views (the same
views every epoch): the epoch with the lowest one is kept.

Hash: bit = coding pre-activation above the coding layer's threshold (0; the per-bit
training median for ``bihalf``).  The exported NumPy Hasher runs the same conv, batch-norm,
pooling and dense ops; the augmentation is training-only and is not exported.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from semhash.errors import ModelError
from semhash.models.augment import ViewAugmentation, random_views
from semhash.models.base import FitContext
from semhash.models.codings import BinaryCoding, MedianThreshold, check_coding
from semhash.models.keras_common import (
    KerasHashModel,
    ValidationRetrieval,
    checkpoint_split,
    code_stats,
    spaced_epochs,
    training_sample,
    conv_feature_layers,
    keras_layers_ops,
    training_callbacks,
)
from semhash.models.tf_common import device_description, history_dict, keras, ops, set_seed, tf


def nt_xent(codes, temperature: float):
    """NT-Xent over ``codes`` = [view 1 of B images; view 2 of the same B images] (2B, d):
    mean over the 2B views of -log softmax(similarity to its partner / temperature) among
    the 2B - 1 other views; similarity = cosine."""
    z = codes / ops.maximum(ops.norm(codes, axis=1, keepdims=True), 1e-12)
    n = ops.shape(z)[0]
    half = n // 2
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    logits = logits - 1e9 * ops.eye(n, dtype=logits.dtype)  # a view is not its own partner
    partner = ops.concatenate([ops.arange(half, n), ops.arange(0, half)])
    return ops.mean(keras.losses.sparse_categorical_crossentropy(partner, logits, from_logits=True))


def koleo_loss(embeddings):
    """KoLeo (Sablayrolles et al., 2019; SSCD uses it): -mean log of each embedding's
    distance to its nearest other one, on unit-length embeddings: a differential entropy
    estimate that pushes distinct images apart, so that few share a code."""
    z = embeddings / ops.maximum(ops.norm(embeddings, axis=1, keepdims=True), 1e-12)
    n = ops.shape(z)[0]
    similarity = ops.matmul(z, ops.transpose(z)) - 3.0 * ops.eye(n, dtype=z.dtype)  # not itself
    nearest = ops.max(similarity, axis=1)
    distance = ops.sqrt(ops.maximum(2.0 - 2.0 * nearest, 1e-8))
    return -ops.mean(ops.log(distance))


def bit_margin_loss(z, margin: float = 0.5):
    """For the two views' pre-activations ``z`` (2B, bits): each bit of each view pushed to
    the side of the batch median its partner view is on, by ``margin`` of the bit's spread
    (hinge): a bit that two copies of an image put near the threshold is the one that flips
    between them.  In units of the batch's own spread, so scaling the codes up does not meet it."""
    ordered = tf.sort(z, axis=0)
    half = tf.shape(z)[0] // 2  # 2B rows: the median halfway between the two middle ones
    median = (ordered[half - 1] + ordered[half]) / 2.0
    spread = tf.stop_gradient(tf.math.reduce_std(z, axis=0)) + 1e-6
    u1, u2 = tf.split((z - median) / spread, 2)
    side1, side2 = tf.stop_gradient(tf.sign(u1)), tf.stop_gradient(tf.sign(u2))
    return tf.reduce_mean(tf.nn.relu(margin - u1 * side2) + tf.nn.relu(margin - u2 * side1)) / 2.0


def balance_decorrelation(codes, balance: float, decorrelation: float):
    """``balance`` * mean_j (batch mean of code j)^2 + ``decorrelation`` * mean over j != k
    of cov(code j, code k)^2, on codes in [-1, 1]."""
    bits = codes.shape[-1]
    mean = ops.mean(codes, axis=0)
    loss = balance * ops.mean(mean**2)
    if decorrelation:
        centred = codes - mean
        cov = ops.matmul(ops.transpose(centred), centred) / ops.cast(ops.shape(codes)[0], codes.dtype)
        off = cov * (1.0 - ops.eye(bits, dtype=codes.dtype))
        loss = loss + decorrelation * ops.sum(off**2) / (bits * (bits - 1))
    return loss


@keras.saving.register_keras_serializable(package="semhash")
class ContrastiveHashNetwork(keras.Model):
    """CNN encoder -> coding pre-activations -> :class:`BinaryCoding`; trained by its own
    ``train_step`` (two random views, NT-Xent on the codes)."""

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        bits: int = 30,
        filters: Sequence[int] = (16, 32, 64),
        hidden: Sequence[int] = (128,),
        batch_norm: bool = False,
        global_pool: bool = False,
        input_blur: float = 0.0,
        coding: str = "sign",
        coding_noise: float = 0.0,
        gamma: float = 6.0,
        temperature: float = 0.3,
        balance: float = 0.0,
        decorrelation: float = 0.0,
        alignment: float = 0.0,
        queue_size: int = 0,
        neighbour_weight: float = 1.0,
        augmentation: dict | None = None,
        seed: int | None = None,
        koleo: float = 0.0,
        downsample: str = "pool",
        bit_margin: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.koleo = float(koleo)
        self.bit_margin = float(bit_margin)
        self.downsample = str(downsample)
        self.queue_size = int(queue_size)
        self.neighbour_weight = float(neighbour_weight)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.bits = int(bits)
        self.filters = tuple(int(f) for f in filters or ())
        self.hidden = tuple(int(h) for h in hidden or ())
        self.batch_norm = bool(batch_norm)
        self.global_pool = bool(global_pool)
        self.input_blur = float(input_blur)
        self.alignment = float(alignment)
        self.coding = check_coding(coding)
        self.coding_noise = float(coding_noise)
        self.gamma = float(gamma)
        self.temperature = float(temperature)
        self.balance = float(balance)
        self.decorrelation = float(decorrelation)
        self.augmentation = dict(augmentation or {})
        self.views = ViewAugmentation(**self.augmentation)
        self.seed = seed
        self.feature_layers = conv_feature_layers(
            self.filters, self.hidden, self.batch_norm, global_pool=self.global_pool,
            input_blur=self.input_blur, channels=self.image_shape[-1], downsample=self.downsample,
        )  # fmt: skip
        self.coding_layer = keras.layers.Dense(self.bits, name="coding")
        self.binary_coding = BinaryCoding(self.bits, self.coding, self.coding_noise, self.gamma, seed=seed, name="binary_coding")
        self.view_seeds = keras.random.SeedGenerator(seed, name="view_seeds")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.contrast_tracker = keras.metrics.Mean(name="contrast")

    def build(self, input_shape=None):
        shape = (None, *self.image_shape)
        for layer in self.feature_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.coding_layer.build(shape)
        self.binary_coding.build((None, self.bits))
        if self.queue_size:  # support set of recent embeddings (NNCLR), random until filled
            self.queue = self.add_weight(
                shape=(self.queue_size, self.bits), initializer=keras.initializers.RandomNormal(seed=self.seed),
                trainable=False, name="neighbour_queue",
            )  # fmt: skip
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.contrast_tracker]

    def encode_preactivation(self, x, training=False):
        h = x
        for layer in self.feature_layers:
            h = layer(h, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(h)
        return self.coding_layer(h)

    def codings(self, x, training=False):
        return self.binary_coding(self.encode_preactivation(x, training=training), training=training)

    def hard_bits(self, x):
        return self.binary_coding.hard_bits(self.encode_preactivation(x, training=False))

    def call(self, x, training=False):
        return self.codings(x, training=training)

    def hash_layers(self) -> list:
        return [*self.feature_layers, self.coding_layer]

    def _two_views(self, x, seed):
        seed = tf.cast(seed, tf.int32)
        return tf.concat([random_views(x, self.views, seed), random_views(x, self.views, seed[::-1] + 1)], axis=0)

    def _objective(self, codes):
        signed = 2.0 * codes - 1.0  # {0, 1} -> {-1, 1} (sigmoid codings: (-1, 1))
        contrast = nt_xent(signed, self.temperature)
        return contrast + balance_decorrelation(signed, self.balance, self.decorrelation), contrast

    def _neighbour_loss(self, z, codes):
        """NNCLR (Dwibedi et al., 2021): the nearest neighbour of view 1's embedding in the
        queue of earlier embeddings must pick out view 2's code among the batch's view-2
        codes, and vice versa; then view 1's embeddings enter the queue.  Embedding =
        tanh(pre-activation), unit length; the neighbour carries no gradient."""
        embedding = tf.math.l2_normalize(tf.tanh(z), axis=1)
        signed = tf.math.l2_normalize(2.0 * codes - 1.0, axis=1)
        e1, e2 = tf.split(embedding, 2)
        s1, s2 = tf.split(signed, 2)
        queue = tf.math.l2_normalize(self.queue, axis=1)
        labels = tf.range(tf.shape(e1)[0])
        loss = 0.0
        for anchor, partner in ((e1, s2), (e2, s1)):
            neighbour = tf.stop_gradient(tf.gather(queue, tf.argmax(tf.matmul(anchor, queue, transpose_b=True), axis=1)))
            logits = tf.matmul(neighbour, partner, transpose_b=True) / self.temperature
            loss += tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)) / 2.0
        self.queue.assign(tf.concat([tf.stop_gradient(e1), self.queue], axis=0)[: self.queue_size])
        return loss

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        views = self._two_views(x, self.view_seeds.next())
        with tf.GradientTape() as tape:
            z = self.encode_preactivation(views, training=True)
            codes = self.binary_coding(z, training=True)
            loss, contrast = self._objective(codes)
            if self.alignment:  # the two views' pre-activations themselves, not only their signs
                t1, t2 = tf.split(tf.tanh(z), 2)
                loss = loss + self.alignment * tf.reduce_mean(tf.reduce_sum((t1 - t2) ** 2, axis=1)) / self.bits
            if self.queue_size:
                loss = loss + self.neighbour_weight * self._neighbour_loss(z, codes)
            if self.koleo:  # spread the images apart: each one's nearest other image as far as can be
                loss = loss + self.koleo * koleo_loss(tf.split(tf.tanh(z), 2)[0])
            if self.bit_margin:  # the two views' bits kept off the threshold, on the same side
                loss = loss + self.bit_margin * bit_margin_loss(z)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        self.contrast_tracker.update_state(contrast)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """The label-free criterion: NT-Xent of the hard codes of fixed views (the seed
        depends on nothing but the batch's content, so every epoch sees the same views)."""
        x = data[0] if isinstance(data, (tuple, list)) else data
        seed = tf.stack([tf.cast(tf.reduce_sum(x) * 1000.0, tf.int32), tf.constant(7, tf.int32)])
        codes = self.hard_bits(self._two_views(x, seed))
        loss, contrast = self._objective(codes)
        self.loss_tracker.update_state(loss)
        self.contrast_tracker.update_state(contrast)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "bits": self.bits,
            "filters": list(self.filters),
            "hidden": list(self.hidden),
            "batch_norm": self.batch_norm,
            "global_pool": self.global_pool,
            "input_blur": self.input_blur,
            "alignment": self.alignment,
            "coding": self.coding,
            "coding_noise": self.coding_noise,
            "gamma": self.gamma,
            "temperature": self.temperature,
            "balance": self.balance,
            "decorrelation": self.decorrelation,
            "queue_size": self.queue_size,
            "neighbour_weight": self.neighbour_weight,
            "augmentation": dict(self.augmentation),
            "seed": self.seed,
            "koleo": self.koleo,
            "downsample": self.downsample,
            "bit_margin": self.bit_margin,
        }


#: checkpoints scored by validation mAP at most (spread evenly, the last included): each costs
#: hashing the validation split and 5,000 training images
MAX_CHECKS = 30


class LowestValidationLoss(keras.callbacks.Callback):
    """Label-free checkpoint choice: keep the weights of the epoch with the lowest val_loss."""

    def __init__(self):
        super().__init__()
        self.losses: list[float] = []
        self.best_epoch = -1
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("val_loss", np.inf))
        self.losses.append(loss)
        if self.best_epoch < 0 or loss < self.losses[self.best_epoch]:
            self.best_epoch, self.best_weights = epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        self.best_weights = None


class ContrastiveHashModel(KerasHashModel):
    kind = "contrastive"
    description = "CNN trained without labels so that two random views of an image share a code (NT-Xent on binary codes)"
    needs_labels = False
    STATE = ["metrics_", "history_", "train_seconds_", "epoch_seconds_", "device_"]

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),
        bits: int = 30,
        filters: Sequence[int] = (16, 32, 64),
        hidden: Sequence[int] = (128,),
        batch_norm: bool = False,
        global_pool: bool = False,
        input_blur: float = 0.0,
        coding: str = "bihalf",
        coding_noise: float = 0.0,
        gamma: float = 6.0,
        temperature: float = 0.3,
        balance: float = 0.0,
        decorrelation: float = 0.0,
        alignment: float = 0.0,
        queue_size: int = 2048,
        neighbour_weight: float = 1.0,
        rotation: float = 15.0,
        scale: float = 0.2,
        shift: float = 0.15,
        flip: bool = False,
        contrast: float = 0.4,
        pixel_noise: float = 0.1,
        erase: float = 0.0,
        blur: float = 0.25,
        brightness: float = 0.15,
        view_gamma: float = 0.2,
        resample: float = 0.5,
        jpeg: float = 0.5,
        bit_margin: float = 0.0,
        final_rotation: str = "itq",
        train_steps: int = 1800,
        epochs: int | None = None,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        validation_split: float = 0.1,
        select_by: str = "val_map",
        select_tolerance: float = 0.01,
        seed: int = 0,
    ):
        self.input_shape = input_shape
        self.bits = bits
        self.filters = filters
        self.hidden = hidden
        self.batch_norm = batch_norm
        self.global_pool = global_pool
        self.input_blur = input_blur
        self.alignment = alignment
        self.coding = coding
        self.coding_noise = coding_noise
        self.gamma = gamma
        self.temperature = temperature
        self.balance = balance
        self.decorrelation = decorrelation
        self.queue_size = queue_size
        self.neighbour_weight = neighbour_weight
        self.rotation = rotation
        self.scale = scale
        self.shift = shift
        self.flip = flip
        self.contrast = contrast
        self.pixel_noise = pixel_noise
        self.erase = erase
        self.blur = blur
        self.brightness = brightness
        self.view_gamma = view_gamma
        self.resample = resample
        self.jpeg = jpeg
        self.bit_margin = bit_margin
        self.final_rotation = final_rotation
        self.train_steps = train_steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_split = validation_split
        self.select_by = select_by
        self.select_tolerance = select_tolerance
        self.seed = seed

    def augmentation(self) -> dict:
        return {
            "rotation": float(self.rotation),
            "scale": float(self.scale),
            "shift": float(self.shift),
            "flip": bool(self.flip),
            "contrast": float(self.contrast),
            "noise": float(self.pixel_noise),
            "erase": float(self.erase),
            "blur": float(self.blur),
            "brightness": float(self.brightness),
            "gamma": float(self.view_gamma),
            "resample": float(self.resample),
            "jpeg": float(self.jpeg),
        }

    def _check_options(self) -> None:
        from semhash.hashing import MAX_BITS

        if not 1 <= int(self.bits) <= MAX_BITS:  # before training, not after it
            raise ModelError(f"bits must be between 1 and {MAX_BITS}, not {self.bits}")
        check_coding(self.coding)
        ViewAugmentation(**self.augmentation())  # refuses bad strengths
        if float(self.temperature) <= 0:
            raise ModelError("temperature must be > 0")
        weights = (self.balance, self.decorrelation, self.alignment, self.coding_noise, self.neighbour_weight, self.input_blur)
        if min(float(w) for w in weights) < 0:
            raise ModelError("balance, decorrelation, alignment, coding_noise, neighbour_weight and input_blur must be >= 0")
        if int(self.queue_size) < 0:
            raise ModelError("queue_size must be >= 0 (0: no nearest-neighbour positives)")
        if self.select_by not in ("val_map", "val_loss"):
            raise ModelError(f"select_by must be 'val_map' or 'val_loss', not {self.select_by!r}")
        if int(self.batch_size) < 2:
            raise ModelError("batch_size must be at least 2 (a view needs other images to contrast with)")
        if not self.filters and not self.hidden:
            raise ModelError("filters and hidden are both empty: the encoder needs a layer")
        if float(self.bit_margin) < 0:
            raise ModelError("bit_margin must be >= 0")
        if self.final_rotation not in ("none", "itq"):
            raise ModelError(f"final_rotation must be 'none' or 'itq', not {self.final_rotation!r}")

    def _build_network(self) -> ContrastiveHashNetwork:
        net = ContrastiveHashNetwork(
            image_shape=self.input_shape,
            bits=self.bits,
            filters=self.filters,
            hidden=self.hidden,
            batch_norm=self.batch_norm,
            global_pool=bool(self.global_pool),
            input_blur=float(self.input_blur),
            alignment=float(self.alignment),
            coding=self.coding,
            coding_noise=self.coding_noise,
            gamma=self.gamma,
            temperature=self.temperature,
            balance=self.balance,
            decorrelation=self.decorrelation,
            queue_size=int(self.queue_size),
            neighbour_weight=float(self.neighbour_weight),
            augmentation=self.augmentation(),
            seed=self.seed,
            bit_margin=float(self.bit_margin),
        )
        net.build((None, *tuple(self.input_shape)))
        return net

    def fit(self, images, labels=None, *, context: FitContext | None = None):
        context = context or FitContext()
        self._check_options()
        set_seed(self.seed)
        images = np.asarray(images, dtype=np.float32)
        train_x, val_x, retrieval = checkpoint_split(
            images, labels, select_by=self.select_by, fraction=self.validation_split, seed=self.seed
        )
        batch_size = int(min(self.batch_size, len(train_x) - len(train_x) % 2 or 2))
        steps_per_epoch = int(np.ceil(len(train_x) / batch_size))
        # ``epochs`` when given, else enough for ``train_steps`` optimizer steps: the cost of
        # training is its steps (1,800: 120 epochs of mnist-5k's 3,600 images, 9 of Fashion-MNIST's 54,000)
        epochs = int(self.epochs) if self.epochs else max(1, int(np.ceil(int(self.train_steps) / steps_per_epoch)))
        steps = epochs * steps_per_epoch
        self.network_ = self._build_network()
        schedule = keras.optimizers.schedules.CosineDecay(float(self.learning_rate), max(1, steps))
        self.network_.compile(optimizer=keras.optimizers.Adam(schedule))
        self.device_ = device_description()
        callbacks = training_callbacks(epochs, context.verbose, self.kind)
        selector = None
        if retrieval is not None:
            selector = ValidationRetrieval(
                val_x, *retrieval, int(self.bits), float(self.select_tolerance), bits_of=self.hash_bits_keras,
                check_epochs=spaced_epochs(epochs, MAX_CHECKS),
            )  # fmt: skip
        elif val_x is not None:
            selector = LowestValidationLoss()
        if selector is not None:
            callbacks.insert(0, selector)  # before the progress bar, which shows val_map
        if self.coding == "bihalf":  # before the selector: the epoch's hash uses its own medians
            sample = training_sample(train_x, self.seed)
            callbacks.insert(0, MedianThreshold(self.network_.binary_coding, self.preactivations, sample))
        timer = EpochTimer()
        callbacks.insert(0, timer)  # first: an epoch's time is its training, not the checkpoint scoring
        how = {ValidationRetrieval: "checkpoint by validation mAP", LowestValidationLoss: "checkpoint by validation contrastive loss"}
        context.log(
            f"training {self.kind} on {len(train_x)} images for {epochs} epochs of batch {batch_size}, "
            f"{how.get(type(selector), 'last epoch kept')} ({self.device_})"
        )
        started, cpu_started = time.time(), time.process_time()
        history = self.network_.fit(
            train_x,
            validation_data=(val_x,) if val_x is not None and retrieval is None else None,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
        )
        self.train_seconds_ = time.time() - started
        self.history_ = history_dict(history)
        self.epoch_seconds_ = timer.seconds
        self.metrics_ = {
            "epochs": epochs,
            "epoch_seconds": float(np.median(timer.seconds)) if timer.seconds else None,
            "epoch_cpu_seconds": float(np.median(timer.cpu_seconds)) if timer.cpu_seconds else None,
            "train_cpu_seconds": round(time.process_time() - cpu_started, 1),
        }
        if isinstance(selector, ValidationRetrieval) and selector.best_epoch >= 0:
            self.metrics_["selected_epoch"] = selector.best_epoch + 1
            self.metrics_["val_map"] = selector.best_map
        elif isinstance(selector, LowestValidationLoss) and selector.best_epoch >= 0:
            self.metrics_["selected_epoch"] = selector.best_epoch + 1
            self.metrics_["val_loss"] = selector.losses[selector.best_epoch]
        self.metrics_.update(code_stats(self.preactivations(train_x), self.network_.binary_coding.threshold_values()))
        if self.final_rotation == "itq":
            self._rotate_codes(train_x, context)
        return self

    def _rotate_codes(self, images: np.ndarray, context: FitContext) -> None:
        """ITQ on the coding pre-activations, folded into the coding layer: centred, turned to
        their principal axes, then rotated (Gong & Lazebnik) so that their signs lose the least;
        kernel W -> W T, bias b -> (b - mean) T with T = axes x rotation (bits x bits)."""
        from semhash.models.baselines import itq_rotation
        from semhash.models.codings import median_thresholds
        from semhash.models.keras_common import code_stats

        bits = int(self.bits)
        if len(images) < bits:
            context.log(f"final_rotation itq needs at least {bits} images, not {len(images)}: left out")
            return
        z = self.preactivations(images).astype(np.float64)
        mean = z.mean(axis=0)
        _, _, axes = np.linalg.svd(z - mean, full_matrices=False)
        rotation, losses = itq_rotation((z - mean) @ axes.T, 50, int(self.seed))
        transform = axes.T @ rotation
        layer = self.network_.coding_layer
        kernel, bias = layer.get_weights()
        layer.set_weights([(kernel @ transform).astype(np.float32), ((bias - mean) @ transform).astype(np.float32)])
        coding = self.network_.binary_coding
        if self.coding == "bihalf":  # the medians of the new pre-activations
            coding.set_threshold(median_thresholds(self.preactivations(images)))
        self.metrics_["itq_quantization_loss"] = [round(float(losses[0]) / len(z), 4), round(float(losses[-1]) / len(z), 4)]
        self.metrics_.update(code_stats(self.preactivations(images), coding.threshold_values()))

    # -- use ------------------------------------------------------------------------------
    def preactivations(self, images) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        out = [np.asarray(self.network_.encode_preactivation(images[s : s + 1024])) for s in range(0, len(images), 1024)]
        return np.concatenate(out) if out else np.zeros((0, int(self.bits)), np.float32)

    def hash_bits_keras(self, images) -> np.ndarray:
        """Bits computed by Keras: coding pre-activation above the coding layer's threshold
        (a compiled function: the checkpoint selector hashes thousands of images an epoch)."""
        images = np.asarray(images, dtype=np.float32)
        if getattr(self, "_hard_bits_network", None) is not self.network_:
            signature = [tf.TensorSpec([None, *(int(d) for d in self.input_shape)], tf.float32)]
            self._hard_bits = tf.function(self.network_.hard_bits, input_signature=signature)
            self._hard_bits_network = self.network_
        out = [np.asarray(self._hard_bits(images[s : s + 1024])) for s in range(0, len(images), 1024)]
        return (np.concatenate(out) if out else np.zeros((0, int(self.bits)))).astype(np.uint8)

    def export_hasher(self):
        from semhash.inference import Hasher

        ops_list: list[dict] = []
        params: dict[str, np.ndarray] = {}
        keras_layers_ops(self.network_.hash_layers(), params, ops_list)
        threshold = self.network_.binary_coding.threshold_values()
        info = {"kind": self.kind, "coding": self.coding}
        return Hasher(ops_list, params, int(self.bits), tuple(self.input_shape), threshold, info=info)


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds and process CPU seconds of every epoch's training steps.  On a shared
    machine wall time depends on the other jobs; CPU seconds much less (on an idle machine
    with n cores, wall >= CPU / n)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._started = (0.0, 0.0)

    def on_epoch_begin(self, epoch, logs=None):
        self._started = (time.time(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.time() - self._started[0], 3))
        self.cpu_seconds.append(round(time.process_time() - self._started[1], 3))
