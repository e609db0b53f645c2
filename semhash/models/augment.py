"""Random views of a batch of images, inside the TensorFlow graph (no Python per image).

:func:`random_views` draws, for every image, one random affine map (rotation, scaling, shift
and, where the data allows, a left-right mirror) applied in a single
``ImageProjectiveTransformV3`` call (bilinear, zero fill: what a crop-and-resize and a small
rotation do to a 28x28 digit), then a random contrast change and Gaussian pixel noise, and
clips to [0, 1].  It runs in the train step of the ``contrastive`` kind, so a 2-core CPU
spends its time in the network, not in Python.

No colour jitter: the datasets here are grayscale; for 3-channel images the same contrast
factor applies to every channel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from semhash.errors import ModelError
from semhash.models.tf_common import tf


@dataclass(frozen=True)
class ViewAugmentation:
    """How strong each random change is (0 turns a change off).

    rotation  maximum rotation, degrees (uniform in [-rotation, rotation])
    scale     zoom factor drawn log-uniformly in [1/(1+scale), 1+scale]: > 1 enlarges
              (a crop resized to the full image), < 1 shrinks
    shift     maximum shift, a fraction of the image size, independently in x and y
    flip      mirror left-right with probability 1/2 (clothing yes, digits no)
    contrast  contrast factor uniform in [1 - contrast, 1 + contrast] about the image mean
    noise     stddev of Gaussian pixel noise, itself uniform in [0, noise] per image
    erase     side of a random square set to 0 (cutout), a fraction of the image size
    blur      weight a of the separable 3-tap blur [a, 1 - 2a, a], uniform in [0, blur] per
              image (at most 1/3; what downscaling and re-saving do to the pixels)
    """

    rotation: float = 15.0
    scale: float = 0.2
    shift: float = 0.15
    flip: bool = False
    contrast: float = 0.4
    noise: float = 0.1
    erase: float = 0.0
    blur: float = 0.0

    def __post_init__(self):
        check_strengths(asdict(self), "augmentation")
        if self.shift >= 0.5 or self.erase >= 1:
            raise ModelError("augmentation shift must be < 0.5 and erase < 1 (fractions of the image)")


def check_strengths(strengths: dict, what: str) -> None:
    """Every strength a number >= 0 (``flip`` is a yes/no), a blur weight at most 1/3."""
    for name, value in strengths.items():
        if name != "flip" and (not isinstance(value, (int, float)) or value < 0):
            raise ModelError(f"{what} {name} must be a number >= 0, not {value!r}")
    if strengths.get("blur", 0) > 1 / 3:
        raise ModelError(f"{what} blur must be <= 1/3 (the weight of each neighbour pixel)")


def blur_3tap(images, a, mode: str = "CONSTANT"):
    """The separable blur [a, 1 - 2a, a] along rows then columns (``a``: per image, shape
    (batch, 1, 1, 1)); ``mode``: how the border is padded (CONSTANT: zeros, SYMMETRIC)."""
    out = images
    for axis in (1, 2):
        padded = tf.pad(out, [[0, 0], [1, 1], [0, 0], [0, 0]] if axis == 1 else [[0, 0], [0, 0], [1, 1], [0, 0]], mode=mode)
        before = padded[:, :-2] if axis == 1 else padded[:, :, :-2]
        after = padded[:, 2:] if axis == 1 else padded[:, :, 2:]
        out = (1.0 - 2.0 * a) * out + a * (before + after)
    return out


def _affine_transforms(batch: int, height: int, width: int, aug: ViewAugmentation, seed) -> tf.Tensor:
    """(batch, 8) projective transforms mapping output pixel coordinates to input ones."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    angle = tf.random.stateless_uniform([batch], seeds[0], -1.0, 1.0) * (aug.rotation * math.pi / 180.0)
    log_zoom = tf.random.stateless_uniform([batch], seeds[1], -1.0, 1.0) * math.log1p(aug.scale)
    zoom = tf.exp(log_zoom)
    shift = tf.random.stateless_uniform([batch, 2], seeds[2], -1.0, 1.0) * aug.shift
    tx, ty = shift[:, 0] * width, shift[:, 1] * height
    mirror = tf.ones([batch])
    if aug.flip:
        mirror = tf.where(tf.random.stateless_uniform([batch], seeds[3]) < 0.5, -1.0, 1.0)
    # input = M (output - centre - t) + centre, M = mirror_x . R(-angle) / zoom
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    m00, m01 = cos * mirror, sin * mirror
    m10, m11 = -sin, cos
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    ox, oy = cx + tx, cy + ty
    a2 = cx - m00 * ox - m01 * oy
    b2 = cy - m10 * ox - m11 * oy
    zeros = tf.zeros([batch])
    return tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def random_views(images: tf.Tensor, aug: ViewAugmentation, seed: tf.Tensor) -> tf.Tensor:
    """One random view of every image in ``images`` (batch, H, W, C) in [0, 1].

    ``seed``: a shape-(2,) int tensor (stateless random ops: the same seed, the same views).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    batch = shape[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 5)
    out = images
    if aug.rotation or aug.scale or aug.shift or aug.flip:
        transforms = _affine_transforms(batch, height, width, aug, seeds[0])
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=out,
            transforms=transforms,
            output_shape=tf.constant([height, width], tf.int32),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
    if aug.blur:
        a = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[4], 0.0, aug.blur)
        out = blur_3tap(out, a)  # zero padding at the border, like the affine map's fill
    if aug.contrast:
        factor = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[1], 1.0 - aug.contrast, 1.0 + aug.contrast)
        mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
        out = (out - mean) * factor + mean
    if aug.erase:
        side = max(1, int(round(aug.erase * min(height, width))))
        corner = tf.random.stateless_uniform([batch, 2], seeds[2], 0.0, 1.0)
        top = tf.cast(corner[:, 0] * (height - side + 1), tf.int32)
        left = tf.cast(corner[:, 1] * (width - side + 1), tf.int32)
        rows = tf.range(height)[None, :, None]
        cols = tf.range(width)[None, None, :]
        inside = (
            (rows >= top[:, None, None]) & (rows < top[:, None, None] + side)
            & (cols >= left[:, None, None]) & (cols < left[:, None, None] + side)
        )  # fmt: skip
        out = tf.where(inside[..., None], 0.0, out)
    if aug.noise:
        level = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[3], 0.0, aug.noise)
        out = out + level * tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seeds[3], 1))
    return tf.clip_by_value(out, 0.0, 1.0)
