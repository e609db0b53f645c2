"""The contract every model kind fulfils (no TensorFlow here).

scikit-learn style: the constructor stores hyperparameters (training options included, as
MLPClassifier does), ``fit`` learns and sets attributes ending in ``_``, ``export_hasher``
turns the learned encoder into a TensorFlow-free :class:`semhash.inference.Hasher`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class HashModel(ABC):
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    uses_tensorflow: ClassVar[bool] = True
    #: (H, W, C) an image folder is read at when the user gives no --image-size / --channels
    folder_shape: ClassVar[tuple[int, int, int]] = (28, 28, 1)

    # -- hyperparameters ------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    # -- learning -------------------------------------------------------------------------
    @abstractmethod
    def fit(self, images: np.ndarray, labels: np.ndarray | None = None, *, context: "FitContext | None" = None):
        """Learn from ``images`` (and ``labels`` where the kind uses them); return self."""

    @abstractmethod
    def export_hasher(self):
        """-> semhash.inference.Hasher with the same codes as the trained model."""

    def summary_metrics(self) -> dict[str, Any]:
        """Headline numbers specific to the kind (e.g. test accuracy) for meta.json."""
        return {}

    # -- persistence ----------------------------------------------------------------------
    @abstractmethod
    def save(self, directory: Path) -> list[Path]:
        """Write the model's own files into ``directory``; return their paths."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> "HashModel":
        """Read back what ``save`` wrote."""


class FitContext:
    """What ``fit`` may need beyond arrays: where other models live, verbosity, validation
    data from the held-out split, class names."""

    def __init__(
        self,
        workspace=None,
        verbose: int = 1,
        class_names: list[str] | None = None,
        log=None,
        test_images: np.ndarray | None = None,
        test_labels: np.ndarray | None = None,
    ):
        self.workspace = workspace
        # the dataset's query split: only for reporting held-out numbers (e.g. accuracy),
        # never for fitting or model selection
        self.test_images = test_images
        self.test_labels = test_labels
        self.verbose = verbose
        self.class_names = class_names or []
        self.log = log or (lambda message: None)


def save_params_json(model: HashModel, directory: Path) -> Path:
    path = Path(directory) / "params.json"
    path.write_text(json.dumps(model.get_params(), indent=2, default=_jsonable))
    return path


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
