"""Random copies of a batch of images, inside the TensorFlow graph: the views the ``copy``
kind learns from.

Each view is what a photo goes through when it is copied (the edits of the copies benchmark,
:mod:`semhash.edits`, drawn at random strengths and composed): a crop of up to ``crop`` of
each side's length, a rotation of up to ``rotation`` degrees, a border of up to ``pad`` on
each side (black, white or a random grey: the corners a rotation leaves get the same colour),
a left-right mirror with ``flip``; overlays, each with probability ``overlay`` (a filled box,
a line of text-like speckle, in random colours); brightness, gamma, contrast and saturation
changes; half the time downscaling to as little as ``1 - resample`` of the size and back,
and (independently) a blur; a JPEG
re-encoding at quality 30-95 with probability ``jpeg``; and pixel noise.  One projective
transform per image does the geometry (bilinear); everything runs batched, so a 2-core CPU
spends its time in the network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from semhash.errors import ModelError
from semhash.models.augment import blur_3tap, check_strengths, jpeg, photometric, resample
from semhash.models.tf_common import tf


@dataclass(frozen=True)
class CopyEdits:
    """How strong each random edit is (0 turns it off); see the module's docstring."""

    crop: float = 0.2
    rotation: float = 10.0
    pad: float = 0.1
    flip: bool = True
    overlay: float = 0.5
    brightness: float = 0.2
    gamma: float = 0.5
    contrast: float = 0.3
    saturation: float = 0.4
    resample: float = 0.6
    blur: float = 0.25
    jpeg: float = 0.5
    noise: float = 0.02

    def __post_init__(self):
        check_strengths(asdict(self), "copy edit")
        for name in ("crop", "pad", "overlay", "jpeg", "resample", "brightness", "contrast", "saturation"):
            if getattr(self, name) >= 1:
                raise ModelError(f"copy edit {name} must be below 1 (a fraction or a probability)")


def _uniform(shape, seed, low, high):
    return tf.random.stateless_uniform(shape, seed, low, high)


def _geometry(images, edits: CopyEdits, seed):
    """Crop, pad, rotate and mirror: one projective transform per image; the area outside
    the source (borders, a rotation's corners) filled with a per-image colour."""
    batch = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    seeds = tf.random.experimental.stateless_split(seed, 6)
    # zoom > 1: a crop of 1/zoom of the image, enlarged; zoom < 1: the image shrunk inside a border
    crop_zoom = 1.0 / (1.0 - _uniform([batch], seeds[0], 0.0, edits.crop))
    pad_zoom = 1.0 / (1.0 + 2.0 * _uniform([batch], seeds[1], 0.0, edits.pad))
    zoom = tf.where(_uniform([batch], seeds[2], 0.0, 1.0) < 0.5, crop_zoom, pad_zoom)
    angle = _uniform([batch], seeds[3], -1.0, 1.0) * (edits.rotation * math.pi / 180.0)
    # a crop window stays inside the image; a shrunk image stays inside its border
    room = 0.98 * tf.abs(1.0 - 1.0 / zoom) / 2.0  # (a hair less: bilinear reads one pixel further)
    shift = _uniform([batch, 2], seeds[4], -1.0, 1.0) * room[:, None]
    tx = shift[:, 0] * (width - 1) * tf.minimum(zoom, 1.0)
    ty = shift[:, 1] * (height - 1) * tf.minimum(zoom, 1.0)
    mirror = tf.ones([batch])
    if edits.flip:
        mirror = tf.where(_uniform([batch], seeds[5], 0.0, 1.0) < 0.5, -1.0, 1.0)
    # input = M (output - centre) + centre + t, M = mirror_x . R(-angle) / zoom
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    m00, m01, m10, m11 = cos * mirror, sin * mirror, -sin, cos
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a2 = cx + tx - m00 * cx - m01 * cy
    b2 = cy + ty - m10 * cx - m11 * cy
    zeros = tf.zeros([batch])
    transforms = tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)
    # the fill: black, white or a grey; the transform is linear in the pixel values, so
    # transforming (image - fill) with zero fill and adding the fill back fills with it
    choice = _uniform([batch, 1, 1, 1], tf.random.experimental.stateless_fold_in(seed, 7), 0.0, 3.0)
    grey = _uniform([batch, 1, 1, 1], tf.random.experimental.stateless_fold_in(seed, 8), 0.0, 1.0)
    fill = tf.where(choice < 1.0, 0.0, tf.where(choice < 2.0, 1.0, grey))
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=images - fill, transforms=transforms, output_shape=tf.constant([height, width], tf.int32),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )  # fmt: skip
    return moved + fill


def _boxes(batch, height, width, seed, low, high):
    """(batch, H, W, 1) bool masks of one random axis-aligned box per image; its height and
    width, fractions of the image's, drawn in [low[k], high[k]] (k = 0: height, 1: width)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    size = _uniform([batch, 2], seeds[0], 0.0, 1.0) * (tf.constant(high) - tf.constant(low)) + tf.constant(low)
    corner = _uniform([batch, 2], seeds[1], 0.0, 1.0) * (1.0 - size)
    rows = (tf.range(height, dtype=tf.float32)[None, :, None] + 0.5) / height
    cols = (tf.range(width, dtype=tf.float32)[None, None, :] + 0.5) / width
    top, left = corner[:, 0, None, None], corner[:, 1, None, None]
    inside = (rows >= top) & (rows < top + size[:, 0, None, None]) & (cols >= left) & (cols < left + size[:, 1, None, None])
    return inside[..., None]


def _overlay(images, edits: CopyEdits, seed):
    """A filled box (a logo, a caption's background) and a line of text-like speckle, each
    with probability ``overlay``, each in a random colour."""
    batch = tf.shape(images)[0]
    height, width, channels = int(images.shape[1]), int(images.shape[2]), int(images.shape[3])
    seeds = tf.random.experimental.stateless_split(seed, 6)
    box = _boxes(batch, height, width, seeds[0], [0.08, 0.1], [0.3, 0.45])
    line = _boxes(batch, height, width, seeds[1], [0.04, 0.2], [0.12, 0.7])
    text = line & (_uniform(tf.stack([batch, height, width, 1]), seeds[2], 0.0, 1.0) < 0.4)
    box_on = _uniform([batch, 1, 1, 1], seeds[3], 0.0, 1.0) < edits.overlay
    text_on = _uniform([batch, 1, 1, 1], seeds[4], 0.0, 1.0) < edits.overlay
    colours = _uniform([batch, 2, 1, 1, channels], seeds[5], 0.0, 1.0)
    out = tf.where(box & box_on, colours[:, 0], images)
    return tf.where(text & text_on, colours[:, 1], out)


def _blur(images, edits: CopyEdits, seed):
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = _uniform([batch, 1, 1, 1], seeds[0], 0.0, edits.blur)
    a = tf.where(_uniform([batch, 1, 1, 1], seeds[1], 0.0, 1.0) < 0.5, 0.0, a)  # half the copies sharp
    return blur_3tap(images, a, "SYMMETRIC")  # edge padding: a blur does not darken the border


def copy_views(images: tf.Tensor, edits: CopyEdits, seed: tf.Tensor) -> tf.Tensor:
    """One random copy of every image in ``images`` (batch, H, W, C) in [0, 1]; ``seed``: a
    shape-(2,) int tensor (stateless: the same seed, the same copies)."""
    images = tf.convert_to_tensor(images, tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 7)
    out = images
    if edits.crop or edits.pad or edits.rotation or edits.flip:
        out = _geometry(out, edits, seeds[0])
    if edits.overlay:
        out = _overlay(out, edits, seeds[1])
    out = photometric(out, seeds[2], edits.gamma, edits.brightness, edits.contrast, edits.saturation)
    if edits.resample:
        out = resample(out, seeds[3], edits.resample)
    if edits.blur:
        out = _blur(out, edits, seeds[4])
    if edits.jpeg:
        out = jpeg(tf.clip_by_value(out, 0.0, 1.0), seeds[5], edits.jpeg)
    if edits.noise:
        level = _uniform([tf.shape(out)[0], 1, 1, 1], seeds[6], 0.0, edits.noise)
        out = out + level * tf.random.stateless_normal(tf.shape(out), tf.random.experimental.stateless_fold_in(seeds[6], 1))
    return tf.clip_by_value(out, 0.0, 1.0)
