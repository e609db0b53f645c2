"""The ``copy`` kind (issue 22): its in-graph copies, KoLeo, and a tiny network that trains,
exports to the NumPy Hasher with the same bits, and reloads.

Tiles of scikit-learn's two sample photos at 16x16 RGB, a tiny network for an epoch or two:
seconds.  Whether the kind finds copies is measured by ``python -m benchmarks copy-model``,
not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from click.testing import CliRunner  # noqa: E402

from semhash.errors import ModelError  # noqa: E402
from semhash.models import KINDS, build_model  # noqa: E402
from test_zoo import _assert_hasher_matches, _assert_reload_same  # noqa: E402  (one rule for every kind)

TINY = dict(input_shape=(16, 16, 3), bits=16, filters=(4, 8), hidden=(16,), epochs=2, batch_size=64)
OFF = dict(crop=0, rotation=0, pad=0, flip=False, overlay=0, brightness=0, gamma=0, contrast=0, saturation=0, resample=0,
           blur=0, jpeg=0, noise=0)  # fmt: skip


@pytest.fixture(scope="module")
def tiles():
    """1,200 16x16 RGB tiles of the two sample photos, in [0, 1]."""
    from sklearn.datasets import load_sample_images

    out = []
    for image in load_sample_images().images:
        for y in range(0, image.shape[0] - 16, 14):
            for x in range(0, image.shape[1] - 16, 14):
                out.append(image[y : y + 16, x : x + 16])
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(out), 1200, replace=False)
    return np.stack([out[i] for i in chosen]).astype("float32") / 255.0


@pytest.fixture(scope="module")
def tiny_model(tiles):
    return build_model("copy", TINY).fit(tiles)


def _views(images, seed=(1, 2), **edits):
    from semhash.models.copy_views import CopyEdits, copy_views

    return np.asarray(copy_views(images, CopyEdits(**{**OFF, **edits}), np.array(seed)))


# --------------------------------------------------------------------------- the copies
def test_copies_are_seeded_in_range_and_really_change_the_images(tiles):
    from semhash.models.copy_views import CopyEdits, copy_views

    images = tiles[:8]
    a = np.asarray(copy_views(images, CopyEdits(), np.array([1, 2])))
    b = np.asarray(copy_views(images, CopyEdits(), np.array([1, 2])))
    c = np.asarray(copy_views(images, CopyEdits(), np.array([3, 2])))
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, images)
    np.testing.assert_allclose(_views(images), images, atol=1e-6)  # every edit off: the images themselves


def test_each_copy_edit_does_what_it_says():
    image = np.zeros((1, 9, 9, 3), dtype="float32")
    image[0, 4, 1] = 1.0  # a white dot left of the centre
    mirrored = {int(np.argmax(_views(image, seed=(s, 0), flip=True)[0, 4, :, 0])) for s in range(12)}
    assert mirrored == {1, 7}  # kept, or mirrored about the centre column
    grey = np.full((16, 16, 16, 3), 0.5, dtype="float32")
    padded = _views(grey, pad=0.2)  # half shrunk inside a border of black, white or a grey (the other half: crop 0)
    border = np.abs(padded - 0.5).max(axis=-1) > 1e-3
    share = border.mean(axis=(1, 2))
    assert np.all(share < 1 - 1 / 1.4**2 + 0.1) and (share > 0.05).sum() >= 4
    assert len({round(float(v), 2) for v in padded[..., 0][border]}) > 2
    cropped = _views(grey, crop=0.2)  # a crop of a flat image: still flat, no border
    np.testing.assert_allclose(cropped, grey, atol=1e-5)
    boxed = _views(grey, overlay=0.999)  # a box in another colour over part of the image
    changed = np.abs(boxed - grey).max(axis=-1) > 1e-3
    assert np.all(changed.mean(axis=(1, 2)) > 0.005) and np.all(changed.mean(axis=(1, 2)) < 0.6)
    ramp = np.tile(np.linspace(0, 1, 16, dtype="float32")[None, None, :, None], (4, 16, 1, 3))
    coded = _views(ramp, jpeg=0.999)  # re-encoded: close to, not equal to, the original
    assert 0 < np.abs(coded - ramp).mean() < 0.05


def test_bad_copy_edits_are_refused(tiles):
    for params, message in (({"crop": 1.0}, "crop"), ({"blur": 0.5}, "blur"), ({"jpeg": -1}, "jpeg"), ({"koleo": -1}, "koleo"),
                            ({"bits": 128}, "bits must be between 1 and 64")):
        with pytest.raises(ModelError, match=message):
            build_model("copy", {**TINY, **params}).fit(tiles[:64])


def test_koleo_matches_a_numpy_reference_and_is_larger_when_images_crowd():
    from semhash.models.contrastive import koleo_loss

    rng = np.random.default_rng(0)
    z = rng.normal(size=(32, 8)).astype("float32")
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    d = np.linalg.norm(unit[:, None] - unit[None], axis=-1) + np.eye(32) * 9
    np.testing.assert_allclose(float(koleo_loss(z)), -np.mean(np.log(d.min(axis=1))), rtol=1e-4)
    crowded = z[:1] + 0.05 * z  # every embedding near the first
    assert float(koleo_loss(crowded)) > float(koleo_loss(z)) + 1


# --------------------------------------------------------------------------- the kind
def test_registered_trains_exports_the_same_bits_and_reloads(tiny_model, tiles, tmp_path):
    assert "copy" in KINDS
    ops = [op["op"] for op in tiny_model.export_hasher().ops]
    assert ops.count("conv2d") == 2 and "maxpool2d" not in ops and "batchnorm" in ops  # strided convolutions
    assert all(op["strides"] == [2, 2] for op in tiny_model.export_hasher().ops if op["op"] == "conv2d")
    assert tiny_model.summary_metrics()["epochs"] == 2 and "selected_epoch" not in tiny_model.summary_metrics()  # the last
    _assert_hasher_matches(tiny_model, tiles)
    _assert_reload_same(tiny_model, tmp_path, tiles)


def test_cli_trains_the_copy_kind_on_a_photo_folder(tiles, tmp_path):
    from PIL import Image

    from semhash.cli.cmd_train import train

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, tile in enumerate(tiles[:48]):
        Image.fromarray((tile * 255).astype(np.uint8)).save(folder / f"p{i:02d}.png")
    args = [str(folder), "--model", "copy", "--image-size", "16", "--bits", "16", "--epochs", "1", "--batch-size", "16",
            "--param", "filters=4x", "--param", "hidden=8x", "--name", "copies", "--quiet", "--home", str(tmp_path / "home")]  # fmt: skip
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 0, result.output
    assert "trained copies (copy, 16 bits)" in result.output
    # ... and its codes serve as the near tier: a copy with the same pixels, other bytes, is
    # found at distance 0 in the near tier (the similar tier's model is the same one here; a
    # model this small gives other tiles the same code too: ties are listed by path)
    from semhash.cli import main

    home = ["--home", str(tmp_path / "home")]
    indexed = CliRunner().invoke(main, ["index", str(folder), "--near-model", "copies", "--quiet", *home])
    assert indexed.exit_code == 0 and "(near codes: model copies)" in indexed.output, indexed.output
    copy = tmp_path / "copy.png"
    Image.open(folder / "p07.png").save(copy, compress_level=1)
    found = CliRunner().invoke(main, ["query", str(copy), "--tier", "near", "--limit", "100", "--json", *home])
    assert found.exit_code == 0, found.output
    matches = json.loads(found.output)[0]["matches"]
    assert any(m["path"].endswith("p07.png") and (m["tier"], m["distance"]) == ("near", 0) for m in matches)
    assert all(m["tier"] == "near" for m in matches)


def test_an_itq_final_rotation_folds_into_the_coding_layer_and_exports(tiles):
    model = build_model("copy", {**TINY, "coding": "sigmoid", "final_rotation": "itq"}).fit(tiles)
    before, after = model.summary_metrics()["itq_quantization_loss"]
    assert after <= before
    bits = model.export_hasher().hash_bits(tiles)
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.25)  # centred first: no bit (nearly) constant
    _assert_hasher_matches(model, tiles)
    with pytest.raises(ModelError, match="final_rotation"):
        build_model("copy", {**TINY, "final_rotation": "pca"}).fit(tiles[:64])


def test_the_benchmarks_default_row_is_the_kinds_defaults_and_sets_the_near_threshold():
    """docs/benchmarks/copy_model.json's ``default_row`` (the README's copies table shows it)
    was measured with the kind's current defaults, and the near tier's default threshold for a
    64-bit model is the one that row calibrated on its unrelated photos."""
    from pathlib import Path

    from semhash.near_codes import MODEL_THRESHOLD_SHARE

    doc = json.loads((Path(__file__).parents[1] / "docs" / "benchmarks" / "copy_model.json").read_text())
    row = doc["rows"][doc["default_row"]]
    model = build_model("copy", {})
    defaults = json.loads(json.dumps(model.get_params() | {"input_shape": list(model.input_shape)}))
    assert {k: row["params"].get(k) for k in defaults} == defaults
    assert row["near_tier_path"]["threshold"] == round(64 * MODEL_THRESHOLD_SHARE)
