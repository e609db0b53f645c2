"""Random views of a batch of images, inside the TensorFlow graph (no Python per image).

:func:`random_views` draws, for every image, one random affine map (rotation, scaling, shift
and, where the data allows, a left-right mirror) applied in a single
``ImageProjectiveTransformV3`` call (bilinear, zero fill: what a crop-and-resize and a small
rotation do to a 28x28 digit), then a random contrast change and Gaussian pixel noise, and
clips to [0, 1].  It runs in the train step of the ``contrastive`` kind, so a 2-core CPU
spends its time in the network, not in Python.

No colour jitter: the datasets here are grayscale; for 3-channel images the same contrast
factor applies to every channel.  The edits a copy goes through (brightness, gamma, down-up
resampling, JPEG: :func:`photometric`, :func:`resample`, :func:`jpeg`) are here too, shared
with the ``copy`` kind's views (:mod:`semhash.models.copy_views`).
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
    brightness  brightness factor uniform in [1 - brightness, 1 + brightness] (< 1)
    gamma     gamma drawn log-uniformly in [1/(1+gamma), 1+gamma]
    resample  half the images downscaled to a share in [1 - resample, 1] and back (< 1)
    jpeg      probability of a JPEG re-encoding at quality 30..95 (< 1)

    The last four (copies' edits, issue 22) are off by default and drawn from seeds of their
    own, so the views of the others are what they were without them.
    """

    rotation: float = 15.0
    scale: float = 0.2
    shift: float = 0.15
    flip: bool = False
    contrast: float = 0.4
    noise: float = 0.1
    erase: float = 0.0
    blur: float = 0.0
    brightness: float = 0.0
    gamma: float = 0.0
    resample: float = 0.0
    jpeg: float = 0.0

    def __post_init__(self):
        check_strengths(asdict(self), "augmentation")
        if self.shift >= 0.5 or self.erase >= 1:
            raise ModelError("augmentation shift must be < 0.5 and erase < 1 (fractions of the image)")
        if max(self.brightness, self.resample, self.jpeg) >= 1:
            raise ModelError("augmentation brightness, resample and jpeg must be below 1")


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


def photometric(images, seed, gamma: float = 0.0, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0):
    """Per image: gamma drawn log-uniformly in [1/(1+gamma), 1+gamma], brightness factor in
    [1 - brightness, 1 + brightness], contrast about the image mean and (RGB) saturation
    about the grey value likewise; clipped to [0, 1]."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    out = images
    if gamma:
        g = tf.exp(tf.random.stateless_uniform([batch, 1, 1, 1], seeds[0], -1.0, 1.0) * math.log1p(gamma))
        out = tf.pow(tf.clip_by_value(out, 1e-4, 1.0), g)
    if brightness:
        out = out * tf.random.stateless_uniform([batch, 1, 1, 1], seeds[1], 1.0 - brightness, 1.0 + brightness)
    if contrast:
        mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
        out = (out - mean) * tf.random.stateless_uniform([batch, 1, 1, 1], seeds[2], 1.0 - contrast, 1.0 + contrast) + mean
    if saturation and int(images.shape[-1]) == 3:
        grey = tf.reduce_mean(out, axis=-1, keepdims=True)
        out = (out - grey) * tf.random.stateless_uniform([batch, 1, 1, 1], seeds[3], 1.0 - saturation, 1.0 + saturation) + grey
    return tf.clip_by_value(out, 0.0, 1.0)


def resample(images, seed, fraction: float):
    """Half the time, down to a random share of the size in [1 - fraction, 1] (area) and
    back up (bilinear): what a copy saved smaller and viewed larger goes through.  One share
    per half batch (resizing needs one output size per call)."""
    height, width = int(images.shape[1]), int(images.shape[2])
    halves = tf.split(images, 2) if images.shape[0] is not None and images.shape[0] % 2 == 0 else [images]
    out = []
    for k, half in enumerate(halves):
        draw = tf.random.experimental.stateless_fold_in(seed, k)
        f = tf.random.stateless_uniform([], draw, 1.0 - fraction, 1.0)
        f = tf.where(tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(draw, 1), 0.0, 1.0) < 0.5, 1.0, f)
        small = tf.maximum(1, tf.cast(tf.round(f * height), tf.int32)), tf.maximum(1, tf.cast(tf.round(f * width), tf.int32))
        down = tf.image.resize(half, tf.stack(small), method="area")
        out.append(tf.image.resize(down, [height, width], method="bilinear"))
    return tf.concat(out, axis=0) if len(out) > 1 else out[0]


def jpeg(images, seed, probability: float):
    """With ``probability`` per image, a JPEG re-encoding at a quality drawn in 30..95
    (grey images through RGB and back)."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    quality = tf.cast(tf.random.stateless_uniform([batch], seeds[0], 30.0, 96.0), tf.int32)
    on = tf.random.stateless_uniform([batch], seeds[1], 0.0, 1.0) < probability
    channels = int(images.shape[-1])

    def encode(args):
        image, q, do = args
        rgb = image if channels == 3 else tf.image.grayscale_to_rgb(image) if channels == 1 else image[..., :3]
        coded = tf.image.adjust_jpeg_quality(rgb, q)
        coded = coded if channels == 3 else tf.image.rgb_to_grayscale(coded) if channels == 1 else image
        return tf.where(do, coded, image)

    return tf.map_fn(encode, (images, quality, on), fn_output_signature=tf.float32)


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
    copy_seed = tf.random.experimental.stateless_fold_in(seeds[4], 7)  # the copy edits' own draws
    if aug.resample:
        out = resample(out, tf.random.experimental.stateless_fold_in(copy_seed, 0), aug.resample)
    if aug.blur:
        a = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[4], 0.0, aug.blur)
        out = blur_3tap(out, a)  # zero padding at the border, like the affine map's fill
    if aug.brightness or aug.gamma:
        out = photometric(out, tf.random.experimental.stateless_fold_in(copy_seed, 1), aug.gamma, aug.brightness)
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
    if aug.jpeg:
        out = jpeg(tf.clip_by_value(out, 0.0, 1.0), tf.random.experimental.stateless_fold_in(copy_seed, 2), aug.jpeg)
    if aug.noise:
        level = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[3], 0.0, aug.noise)
        out = out + level * tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seeds[3], 1))
    return tf.clip_by_value(out, 0.0, 1.0)
