"""Where things live: one workspace folder holding models, the index and reports.

    <home>/models/<name>/meta.json      kind, bits, input shape, dataset, history, ...
    <home>/models/<name>/model.keras    the trained Keras model (TensorFlow kinds)
    <home>/models/<name>/hasher.npz     the exported NumPy encoder used by index and query
    <home>/index/index.sqlite           the index of record (+ index.lookup, a rebuildable cache)
    <home>/reports/<name>/              report.json, report.md, figures

The home is ``--home``, else ``$SEMHASH_HOME``, else ``./semhash-workspace``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semhash.errors import ModelError

DEFAULT_HOME = "semhash-workspace"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def resolve_home(home: str | Path | None = None) -> Path:
    return Path(home or os.environ.get("SEMHASH_HOME") or DEFAULT_HOME)


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


@dataclass
class ModelInfo:
    """A trained model on disk."""

    name: str
    directory: Path
    meta: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def bits(self) -> int:
        return int(self.meta["bits"])

    @property
    def hasher_path(self) -> Path:
        return self.directory / "hasher.npz"

    @property
    def keras_path(self) -> Path:
        return self.directory / "model.keras"

    def load_hasher(self):
        from semhash.inference import Hasher

        if not self.hasher_path.exists():
            raise ModelError(f"{self.hasher_path}: model {self.name!r} has no exported encoder")
        return Hasher.load(self.hasher_path)


class Workspace:
    def __init__(self, home: str | Path | None = None):
        self.root = resolve_home(home)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def index_path(self) -> Path:
        return self.root / "index" / "index.sqlite"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def model_dir(self, name: str) -> Path:
        return self.models_dir / check_name(name)

    def new_model_name(self, kind: str) -> str:
        """``<kind>-1``, ``<kind>-2``, ... the first free one."""
        i = 1
        while (self.models_dir / f"{kind}-{i}").exists():
            i += 1
        return f"{kind}-{i}"

    def list_models(self) -> list[ModelInfo]:
        """Every trained model, oldest first."""
        found = []
        if self.models_dir.is_dir():
            for meta_path in self.models_dir.glob("*/meta.json"):
                if meta_path.parent.name.startswith("."):  # a model being written (train stages it there)
                    continue
                try:
                    meta = json.loads(meta_path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                found.append(ModelInfo(meta_path.parent.name, meta_path.parent, meta))
        return sorted(found, key=lambda m: (m.meta.get("created_at", ""), m.name))

    def model(self, name: str | None = None) -> ModelInfo:
        """The named model, or the latest trained one when ``name`` is None."""
        if name is None:
            models = self.list_models()
            if not models:
                raise ModelError(f"no trained model in {self.models_dir}: run 'semhash train' first")
            return models[-1]
        meta_path = self.model_dir(name) / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            known = ", ".join(m.name for m in self.list_models()) or "none"
            left = f"; {meta_path.parent} holds no finished model: `semhash train --name {name}` replaces it" if meta_path.parent.is_dir() else ""
            raise ModelError(f"no model named {name!r} in {self.models_dir} (trained: {known}){left}") from None
        except (OSError, ValueError) as exc:
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not valid JSON"
            raise ModelError(
                f"{meta_path}: model {name!r} cannot be read ({cause}): `semhash train --name {name}` replaces it"
            ) from None
        return ModelInfo(name, meta_path.parent, meta)

    def has_model(self, name: str) -> bool:
        """Whether ``name`` is a finished model (a folder whose meta.json reads): a folder an
        interrupted training left is not one, and training that name again replaces it."""
        try:
            json.loads((self.model_dir(name) / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        return True
