"""One registry of model kinds.  Adding a kind = its module + one line here.

Kinds are imported lazily so that listing or resolving them never imports TensorFlow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, NamedTuple

from semhash.errors import ModelError

class KindEntry(NamedTuple):
    target: str  # "module:Class", imported only when the kind is used
    summary: str  # one line for `semhash models --kinds`, without importing the module


KINDS: dict[str, KindEntry] = {
    "autoencoder": KindEntry("semhash.models.autoencoder:AutoencoderHashModel", "stacked autoencoder, noisy sigmoid coding layer (default; --tied, --pretrain)"),
    "vae": KindEntry("semhash.models.vae:VAEHashModel", "variational autoencoder (dense or --conv); hashes the binarised mean; generates images"),
    "classifier-hash": KindEntry("semhash.models.classifier:ClassifierHashModel", "CNN classifier whose noisy sigmoid penultimate layer is the hash (needs labels)"),
    "contrastive": KindEntry("semhash.models.contrastive:ContrastiveHashModel", "CNN trained without labels: two random views of an image share a code (NT-Xent on binary codes)"),
    "copy": KindEntry("semhash.models.copy_detect:CopyHashModel", "CNN trained so that copies of a photo (cropped, rotated, padded, written over, re-encoded) share a code: a learned near tier"),
    "pretrained-classifier": KindEntry("semhash.models.pretrained_classifier:PretrainedClassifierHashModel", "classifier on a trained autoencoder's encoder (--encoder), few labels"),
    "lsh": KindEntry("semhash.models.baselines:LSHHashModel", "baseline: random hyperplanes on centred pixels (NumPy)"),
    "pcah": KindEntry("semhash.models.baselines:PCAHashModel", "baseline: signs of the top principal components (NumPy)"),
    "itq": KindEntry("semhash.models.baselines:ITQHashModel", "baseline: PCA + iterative quantisation rotation, Gong & Lazebnik (NumPy)"),
}

DEFAULT_KIND = "autoencoder"


def get_kind(kind: str):
    """The HashModel subclass for ``kind``."""
    if kind not in KINDS:
        raise ModelError(f"unknown model kind {kind!r}: choose one of {', '.join(KINDS)}")
    module_name, class_name = KINDS[kind].target.split(":")
    return getattr(import_module(module_name), class_name)


def build_model(kind: str, params: dict[str, Any]):
    """Instantiate ``kind`` with ``params``, refusing options the kind does not take."""
    cls = get_kind(kind)
    accepted = set(cls.param_names())
    unknown = sorted(set(params) - accepted)
    if unknown:
        shown = ", ".join("--" + u.replace("_", "-") for u in unknown)
        raise ModelError(f"option(s) {shown} do not apply to model kind {kind!r} (it takes: {', '.join(sorted(accepted))})")
    return cls(**params)
