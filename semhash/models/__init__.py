"""One registry of model kinds.  Adding a kind = its module + one line here.

Kinds are imported lazily so that listing or resolving them never imports TensorFlow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from semhash.errors import ModelError

# kind -> "module:class"
KINDS: dict[str, str] = {
    "autoencoder": "semhash.models.autoencoder:AutoencoderHashModel",
}

DEFAULT_KIND = "autoencoder"


def get_kind(kind: str):
    """The HashModel subclass for ``kind``."""
    if kind not in KINDS:
        raise ModelError(f"unknown model kind {kind!r}: choose one of {', '.join(KINDS)}")
    module_name, class_name = KINDS[kind].split(":")
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
