"""Copy-detection kind (``copy``): codes that stay the same when a photo is copied, cropped,
rotated, padded, written over, re-encoded or brightened, and differ between photos.

What SSCD (Pizzi et al., 2022) does for copy detection, small enough to train on a 2-core CPU
from the user's own photos: a CNN (strided 3x3 convolutions with batch norm, ``filters``;
``Dense(hidden)``; ``Dense(bits)``) learns from two random copies of each image
(:mod:`semhash.models.copy_views`: the edits of the copies benchmark at random strengths)
with NT-Xent on the binary codes, where only the two copies of one image are positives
(no nearest-neighbour positives: two different photos of one kind are not copies), plus
KoLeo on the embeddings (weight 10), which spreads distinct images apart.  64 bits by default, RGB
64x64 inputs.

It is :class:`semhash.models.contrastive.ContrastiveHashNetwork` with other views and terms.
Every image is trained on (the copies to be found are of the library's own photos) and the
last epoch of the cosine-decayed schedule is kept; with ``validation_split`` > 0 a held-out
share chooses the epoch by the contrastive loss of its fixed copies instead.  Exported to
the NumPy Hasher like every kind.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

from semhash.errors import ModelError
from semhash.models.contrastive import ContrastiveHashModel, ContrastiveHashNetwork
from semhash.models.copy_views import CopyEdits, copy_views
from semhash.models.tf_common import keras, tf


@keras.saving.register_keras_serializable(package="semhash")
class CopyHashNetwork(ContrastiveHashNetwork):
    """:class:`ContrastiveHashNetwork` whose two views are random copies (``edits``)."""

    def __init__(self, edits: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.edits = dict(edits or {})
        self.copy_edits = CopyEdits(**self.edits)

    def _two_views(self, x, seed):
        seed = tf.cast(seed, tf.int32)
        return tf.concat([copy_views(x, self.copy_edits, seed), copy_views(x, self.copy_edits, seed[::-1] + 1)], axis=0)

    def get_config(self):
        return {**super().get_config(), "edits": dict(self.edits)}


class CopyHashModel(ContrastiveHashModel):
    kind = "copy"
    description = "CNN trained so that copies of a photo (cropped, rotated, padded, written over, re-encoded) share a code"
    needs_labels = False
    folder_shape = (64, 64, 3)  # photos: colour, and enough pixels for a crop to be a crop

    def __init__(
        self,
        input_shape: Sequence[int] = (64, 64, 3),
        bits: int = 64,
        filters: Sequence[int] = (16, 32, 64, 128),
        hidden: Sequence[int] = (256,),
        downsample: str = "stride",
        coding: str = "bihalf",
        temperature: float = 0.1,
        koleo: float = 10.0,
        decorrelation: float = 1.0,
        final_rotation: str = "none",
        crop: float = 0.2,
        rotation: float = 10.0,
        pad: float = 0.1,
        flip: bool = True,
        overlay: float = 0.5,
        brightness: float = 0.2,
        gamma: float = 0.5,
        contrast: float = 0.3,
        saturation: float = 0.4,
        resample: float = 0.6,
        blur: float = 0.25,
        jpeg: float = 0.5,
        pixel_noise: float = 0.02,
        train_steps: int = 1500,
        epochs: int | None = None,
        batch_size: int = 128,
        learning_rate: float = 2e-3,
        validation_split: float = 0.0,
        seed: int = 0,
    ):
        super().__init__(
            input_shape=input_shape, bits=bits, filters=filters, hidden=hidden, batch_norm=True, coding=coding,
            temperature=temperature, decorrelation=decorrelation, queue_size=0, train_steps=train_steps, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, validation_split=validation_split, select_by="val_loss", seed=seed,
        )  # fmt: skip
        self.downsample = downsample
        self.koleo = koleo
        self.final_rotation = final_rotation
        self.crop = crop
        self.rotation = rotation
        self.pad = pad
        self.flip = flip
        self.overlay = overlay
        self.brightness = brightness
        self.gamma = gamma
        self.contrast = contrast
        self.saturation = saturation
        self.resample = resample
        self.blur = blur
        self.jpeg = jpeg
        self.pixel_noise = pixel_noise

    def edits(self) -> dict:
        return asdict(
            CopyEdits(
                crop=float(self.crop), rotation=float(self.rotation), pad=float(self.pad), flip=bool(self.flip),
                overlay=float(self.overlay), brightness=float(self.brightness), gamma=float(self.gamma),
                contrast=float(self.contrast), saturation=float(self.saturation), resample=float(self.resample),
                blur=float(self.blur), jpeg=float(self.jpeg), noise=float(self.pixel_noise),
            )
        )  # fmt: skip

    def augmentation(self) -> dict:
        return {}  # the views are copies (``edits``), not the contrastive kind's augmentation

    def _check_options(self) -> None:
        super()._check_options()
        self.edits()  # refuses bad strengths
        if float(self.koleo) < 0:
            raise ModelError("koleo must be >= 0")

    def _build_network(self) -> CopyHashNetwork:
        net = CopyHashNetwork(
            edits=self.edits(),
            image_shape=self.input_shape,
            bits=self.bits,
            filters=self.filters,
            hidden=self.hidden,
            batch_norm=True,
            downsample=str(self.downsample),
            coding=self.coding,
            temperature=self.temperature,
            koleo=float(self.koleo),
            decorrelation=float(self.decorrelation),
            queue_size=0,
            seed=self.seed,
        )
        net.build((None, *tuple(self.input_shape)))
        return net

