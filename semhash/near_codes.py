"""Where the near tier's code comes from: PDQ (the default) or a trained model (``semhash
index --near-model NAME``, typically the ``copy`` kind).

A near code is stored and searched as 32 bytes whatever makes it (the record's column, the
near lookup, the grouping all take 256-bit codes): a model's code of ``bits`` <= 64 bits is
written big-endian into the first 8 bytes and the other 24 are zero, so the Hamming distance
of two stored codes is exactly the distance of the model's codes.  The near lookup then cuts
only those first 64 bits into its words (:meth:`NearScheme.layout`), so zero padding never
makes every row a candidate.

What differs between the two:

* PDQ gives 8 codes per image (its rotations and mirrors; the query is expanded to them) and a
  quality (flat images never match); a model gives one code and no quality (a model trained
  on copies has the mirror in its views; a 90-degree rotation is not a copy it knows).
* The default threshold: PDQ 31 of 256 bits (:data:`semhash.tiers.NEAR_THRESHOLD`); a model
  :data:`MODEL_THRESHOLD_SHARE` of its bits (9 of 64: with the default ``copy`` model on its
  benchmark, the loosest threshold at which none of the 133 unrelated photos matches a
  database photo, through this very path; docs/BENCHMARKS.md "The learned copy kind against
  PDQ").  The index keeps the threshold it was bound with.

The index records which scheme made its near codes (meta ``near_model``: the model's name,
fingerprint, bits, threshold); an index never mixes two (``--rebuild`` changes it), and a
query is coded by the same model, checked by fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from semhash.errors import SemhashError
from semhash.perceptual import NEAR_BITS, NEAR_BYTES, near_codes
from semhash.tiers import NEAR_THRESHOLD

#: a model's default near threshold, as a share of its bits (9 of 64)
MODEL_THRESHOLD_SHARE = 9 / 64
#: the most bits a model's near code may have (the Hasher's limit: one uint64 per code)
MODEL_MAX_BITS = 64
#: the name ``--near-model`` takes for PDQ
PDQ_NAME = "pdq"


class NearSchemeError(SemhashError):
    """A near model that cannot be used, or one that differs from the index's."""


class NearThresholdError(NearSchemeError, ValueError):
    """A near threshold outside 0..bits/2 of the index's near code."""


@dataclass(frozen=True)
class NearScheme:
    """How an index's near codes are made: ``model`` None is PDQ; otherwise the model's name,
    its encoder's fingerprint, its bits and the default threshold it was bound with."""

    model: str | None = None
    fingerprint: str | None = None
    bits: int = NEAR_BITS
    threshold: int = NEAR_THRESHOLD

    @property
    def is_pdq(self) -> bool:
        return self.model is None

    @property
    def name(self) -> str:
        return PDQ_NAME if self.model is None else self.model

    def describe(self) -> str:
        return "PDQ (256 bits)" if self.is_pdq else f"model {self.model!r} ({self.bits} bits)"

    @classmethod
    def for_model(cls, name: str, hasher) -> "NearScheme":
        bits = int(hasher.n_bits)
        if bits > MODEL_MAX_BITS:  # pragma: no cover - the Hasher refuses more already
            raise NearSchemeError(f"model {name!r} has {bits} bits: a near model has at most {MODEL_MAX_BITS}")
        return cls(name, str(hasher.fingerprint), bits, max(1, round(bits * MODEL_THRESHOLD_SHARE)))

    # -- the record's meta value ---------------------------------------------------------
    def to_meta(self) -> str | None:
        if self.is_pdq:
            return None
        return json.dumps({"name": self.model, "fingerprint": self.fingerprint, "bits": self.bits, "threshold": self.threshold})

    @classmethod
    def from_meta(cls, value: str | None) -> "NearScheme":
        """The meta value (None or "": PDQ); ValueError for a malformed one."""
        if not value:
            return cls()
        data = json.loads(value)
        bits, threshold = int(data["bits"]), int(data["threshold"])
        if not 1 <= bits <= MODEL_MAX_BITS or not 0 <= threshold <= bits:
            raise ValueError(f"near model of {bits} bits with threshold {threshold}")
        return cls(str(data["name"]), str(data["fingerprint"]), bits, threshold)

    # -- thresholds and the lookup's words -----------------------------------------------
    def check_threshold(self, threshold: int | None) -> int:
        """``threshold`` (None: this scheme's default) -> a threshold in 0..bits/2."""
        if threshold is None:
            return self.threshold
        threshold = int(threshold)
        if not 0 <= threshold <= self.bits // 2:
            raise NearThresholdError(f"the near threshold is 0..{self.bits // 2} of {self.bits} bits ({self.describe()}), got {threshold}")
        return threshold

    def layout(self) -> tuple[tuple[int, int], ...] | None:
        """The near lookup's words: None (chosen by size, over all 256 bits) for PDQ; for a
        model the 16-bit words of the first 64 bits, where its code is."""
        return None if self.is_pdq else tuple((16 * w, 16) for w in range(MODEL_MAX_BITS // 16))


PDQ = NearScheme()


def pack_codes(codes: Sequence[int] | np.ndarray, bits: int) -> np.ndarray:
    """Model codes (ints of ``bits`` bits) -> (N, 32) uint8 near codes: big-endian in the
    first 8 bytes, zeros after."""
    values = np.asarray(codes, dtype=np.uint64).reshape(-1)
    out = np.zeros((len(values), NEAR_BYTES), np.uint8)
    out[:, :8] = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    return out


class NearCoder:
    """Computes near codes for decoded images (:attr:`semhash.data.DecodedImage.near`: square
    uint8).  -> per image ((V, 32) uint8 codes, the image's own first; quality or None)."""

    scheme: NearScheme = PDQ

    def codes(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, int | None]]:
        return [near_codes(image) for image in images]


class ModelNearCoder(NearCoder):
    """A model's code as the near code: the near image resized to the model's input (Lanczos,
    grey repeated to RGB where the model wants colour), hashed in one batch."""

    def __init__(self, scheme: NearScheme, hasher: Any):
        self.scheme = scheme
        self.hasher = hasher

    def codes(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, int | None]]:
        if not images:
            return []
        batch = np.stack([model_input(image, self.hasher.input_shape) for image in images])
        packed = pack_codes(self.hasher.hash(batch), self.scheme.bits)
        return [(packed[i : i + 1], None) for i in range(len(images))]


def model_input(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A square uint8 near image -> the model's (H, W, C) float32 input in [0, 1]."""
    from PIL import Image

    height, width, channels = (int(s) for s in shape)
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if channels == 3 and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    pil = Image.fromarray(image)
    if channels == 1 and pil.mode != "L":
        pil = pil.convert("L")
    if pil.size != (width, height):
        pil = pil.resize((width, height), Image.Resampling.LANCZOS)
    out = np.asarray(pil, dtype=np.float32) / 255.0
    return out[..., None] if channels == 1 else out


def coder_for(scheme: NearScheme, load_model) -> NearCoder:
    """The coder of ``scheme``: PDQ, or the named model loaded with ``load_model(name)`` (a
    Hasher) and checked against the fingerprint the index was bound with."""
    if scheme.is_pdq:
        return NearCoder()
    hasher = load_model(scheme.model)
    if str(hasher.fingerprint) != scheme.fingerprint or int(hasher.n_bits) != scheme.bits:
        raise NearSchemeError(
            f"near model {scheme.model!r} changed since indexing (fingerprint {scheme.fingerprint} -> "
            f"{hasher.fingerprint}): re-run `semhash index --rebuild --near-model {scheme.model}`"
        )
    return ModelNearCoder(scheme, hasher)
