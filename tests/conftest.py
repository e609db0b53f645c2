"""Shared fixtures: tiny real data, odd image files, one tiny trained model per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytest_plugins = ["postgres_server"]  # postgres_server / postgres_url fixtures: a real server

# Property tests are seeded like the rest: the same examples on every run and every machine
# (a falsifying example found while developing belongs in the test as an explicit case).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("semhash", derandomize=True)
_hypothesis_settings.load_profile("semhash")


@pytest.fixture(scope="session")
def digits():
    from semhash.data import load_builtin

    return load_builtin("digits")


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img).save(path)
    return path


@pytest.fixture(scope="session")
def png_writer():
    """write_png as a fixture: pytest's own runner does not put the tests folder on sys.path."""
    return write_png


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory, digits) -> Path:
    """60 labelled 8x8 digit PNGs in label subfolders (6 per class)."""
    root = tmp_path_factory.mktemp("digit_folder")
    for label in range(10):
        rows = np.flatnonzero(digits.labels == label)[:6]
        for row in rows:
            write_png(root / str(label) / f"d{row:04d}.png", digits.images[row])
    return root


def make_odd_files(root: Path, digits) -> dict[str, Path]:
    """The fixtures the issue names: bad files and unusual-but-valid images."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    good = (digits.images[0][..., 0] * 255).astype(np.uint8)
    # bad: corrupt PNG (valid signature, garbage after), text named .png, zero bytes
    valid = root / "tmp_valid.png"
    Image.fromarray(good).save(valid)
    data = valid.read_bytes()
    valid.unlink()
    (root / "corrupt.png").write_bytes(data[:40] + b"\x00garbage" * 10)
    files["corrupt"] = root / "corrupt.png"
    (root / "notes.png").write_text("this is a text file, not an image\n")
    files["text"] = root / "notes.png"
    (root / "empty.png").write_bytes(b"")
    files["empty"] = root / "empty.png"
    # valid but unusual
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[4:12, 4:12, 3] = 255
    Image.fromarray(rgba).save(root / "rgba.png")
    files["rgba"] = root / "rgba.png"
    deep = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    Image.fromarray(deep).save(root / "deep16.png")
    files["deep16"] = root / "deep16.png"
    # EXIF orientation 6 (rotate 90 CW on display): a 20x10 image shows as 10x20
    wide = np.zeros((10, 20), dtype=np.uint8)
    wide[:, :5] = 255  # left stripe
    img = Image.fromarray(wide).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)
    files["exif"] = root / "rotated.jpg"
    big = np.random.default_rng(0).integers(0, 255, (3000, 4000), dtype=np.uint8)
    Image.fromarray(big).save(root / "large.png")
    files["large"] = root / "large.png"
    Image.fromarray(good).save(root / "ünïcødé-数字.png")
    files["unicode"] = root / "ünïcødé-数字.png"
    Image.fromarray(good).convert("P").save(root / "palette.gif")
    files["gif"] = root / "palette.gif"
    Image.fromarray(good).save(root / "digit.webp")
    files["webp"] = root / "digit.webp"
    Image.fromarray(good).save(root / "digit.bmp")
    files["bmp"] = root / "digit.bmp"
    Image.fromarray(good).save(root / "digit.tiff")
    files["tiff"] = root / "digit.tiff"
    return files


@pytest.fixture(scope="session")
def odd_files(tmp_path_factory, digits):
    """Read-only: tests that change files must copy them first."""
    return make_odd_files(tmp_path_factory.mktemp("odd"), digits)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory):
    """A workspace with a tiny default autoencoder trained on sklearn's digits (seconds)."""
    from semhash.train import train

    home = tmp_path_factory.mktemp("home")
    from semhash.workspace import Workspace

    train(
        "digits",
        "autoencoder",
        {"epochs": 2, "hidden": (32,), "bits": 16, "noise": 4.0, "seed": 0},
        name="tiny",
        workspace=Workspace(home),
        verbose=0,
    )
    return home


def run_cli(*args, home=None, ok=True, env=None):
    """Invoke the `semhash` CLI in-process (``--home HOME`` appended when given); with
    ``ok``, assert that it succeeded."""
    from click.testing import CliRunner

    from semhash.cli import main

    argv = [str(a) for a in args] + (["--home", str(home)] if home is not None else [])
    result = CliRunner().invoke(main, argv, env=env, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


@pytest.fixture(scope="session")
def cli():
    """run_cli as a fixture (the tests folder is not on sys.path under pytest's runner)."""
    return run_cli


@pytest.fixture()
def home_copy(trained_home, tmp_path):
    """A private copy of the session's workspace with its tiny trained model."""
    import shutil

    target = tmp_path / "home"
    shutil.copytree(trained_home, target)
    return target
