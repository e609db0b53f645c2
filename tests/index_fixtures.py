"""Helpers for the index tests: a real (tiny, TensorFlow-free) model in a fake workspace,
and folders of real PNG files.  Imported by tests/test_index.py (not a conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semhash.inference import Hasher
from semhash.workspace import Workspace

SHAPE = (8, 8, 1)


def make_hasher(seed: int = 0, n_bits: int = 16) -> Hasher:
    """flatten -> dense: a random projection of the 64 pixels, one bit per output."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(64, n_bits))
    # centre the projection near the digits' mean intensity so the bits split them
    params = {"op1.kernel": kernel, "op1.bias": -(np.full(64, 0.3) @ kernel)}
    return Hasher(ops=[{"op": "flatten"}, {"op": "dense"}], params=params, n_bits=n_bits, input_shape=SHAPE)


def add_model(home: Path, name: str = "m1", seed: int = 0, n_bits: int = 16) -> Hasher:
    """Save a hasher as ``<home>/models/<name>`` so ``Workspace(home).model(name)`` works."""
    hasher = make_hasher(seed, n_bits)
    directory = Path(home) / "models" / name
    directory.mkdir(parents=True, exist_ok=True)
    hasher.save(directory / "hasher.npz")
    meta = {
        "name": name,
        "kind": "lsh",
        "bits": n_bits,
        "input_shape": list(SHAPE),
        "created_at": f"2024-01-01T00:00:0{seed % 10}",
    }
    (directory / "meta.json").write_text(json.dumps(meta))
    return hasher


def workspace(home: Path) -> Workspace:
    return Workspace(home)


_DIGITS: tuple[np.ndarray, np.ndarray] | None = None


def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as uint8 images (0..255) and their labels (cached)."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        _DIGITS = ((d.images * 255.0 / 16.0 + 0.5).astype(np.uint8), d.target.astype(int))
    return _DIGITS


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "L").save(path)
    return path


def write_digit_folder(
    folder: Path, per_class: int = 5, classes: tuple[int, ...] = (0, 1, 2), start: int = 0
) -> list[Path]:
    """``folder/<digit>/img-<row>.png`` for the first ``per_class`` digits of each class."""
    images, labels = digits()
    written = []
    for c in classes:
        rows = np.flatnonzero(labels == c)[start : start + per_class]
        for row in rows:
            written.append(write_png(folder / str(c) / f"img-{row:04d}.png", images[row]))
    return written


# One workspace with one 16-bit model "m1": the fixtures the index, robustness, web and
# PostgreSQL tests share (import them by name: `from index_fixtures import home, ws`).
@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "ws"
    add_model(home, "m1", seed=0, n_bits=16)
    return home


@pytest.fixture
def ws(home: Path) -> Workspace:
    return Workspace(home)
