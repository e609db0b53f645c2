"""The ``contrastive`` kind, its in-graph augmentation and loss, the coding layers it shares
with the autoencoder, and ``pretrained-classifier`` on a contrastive encoder.

Tiny networks on scikit-learn's 1,797 8x8 digits for 1-2 epochs: seconds each.  The
exported NumPy Hasher must give the bits Keras computes on all 1,797 images, and a saved and
reloaded model the same bits again (test_zoo's helpers: the same rule for every kind).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from click.testing import CliRunner  # noqa: E402

from semhash.errors import ModelError  # noqa: E402
from semhash.models import KINDS, build_model  # noqa: E402
from semhash.models.base import FitContext  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402
from test_zoo import _assert_hasher_matches, _assert_reload_same  # noqa: E402  (one rule for every kind)

TINY = dict(bits=12, filters=(4, 8), hidden=(16,), epochs=2, batch_size=128)


def _fit(digits, labels=True, **params):
    model = build_model("contrastive", {"input_shape": digits.image_shape, **TINY, **params})
    test_x, test_y = digits.part("query")
    context = FitContext(verbose=0, test_images=test_x, test_labels=test_y)
    return model.fit(digits.images, digits.labels if labels else None, context=context)


@pytest.fixture(scope="module")
def sign_model(digits):
    return _fit(digits, coding="sign", queue_size=0, blur=0.0)


@pytest.fixture(scope="module")
def default_model(digits):
    """The kind's defaults (bi-half, NNCLR queue, blur) on tiny layers."""
    return _fit(digits, epochs=1)


@pytest.fixture(scope="module")
def bihalf_model(digits):
    return _fit(digits, coding="bihalf", flip=True, erase=0.25)


# --------------------------------------------------------------------------- the kind
def test_registered_and_listed():
    from semhash.cli.cmd_models import models

    assert "contrastive" in KINDS
    result = CliRunner().invoke(models, ["--kinds"])
    assert result.exit_code == 0 and "contrastive" in result.output


def test_sign_model_exports_reloads_and_selects_by_validation_map(sign_model, digits, tmp_path):
    metrics = sign_model.summary_metrics()
    assert 1 <= metrics["selected_epoch"] <= 2 and 0 <= metrics["val_map"] <= 1
    assert len(sign_model.epoch_seconds_) == 2 and metrics["epoch_seconds"] > 0
    assert set(sign_model.history_) >= {"loss", "contrast", "val_map"}
    ops = [op["op"] for op in sign_model.export_hasher().ops]
    assert ops.count("conv2d") == 2 and ops.count("maxpool2d") == 2 and "batchnorm" not in ops
    assert sign_model.export_hasher().info["coding"] == "sign"
    _assert_hasher_matches(sign_model, digits.images)
    _assert_reload_same(sign_model, tmp_path, digits.images)


def test_defaults_are_the_logged_best_configuration(default_model, digits, tmp_path):
    # docs/benchmarks/contrastive_experiments.json, tags cnn-e60-blur-bihalf-nnclr2048 and
    # mnist5k-epochs120 (the same, twice the steps)
    # + docs/benchmarks/contrastive_copy_views_{fashion,mnist}.json, tags *-copy-views-itq (issue 22)
    params = build_model("contrastive", {}).get_params()
    assert {k: params[k] for k in ("coding", "queue_size", "blur", "train_steps", "epochs")} == {
        "coding": "bihalf", "queue_size": 2048, "blur": 0.25, "train_steps": 1800, "epochs": None,
    }  # fmt: skip
    assert {k: params[k] for k in ("brightness", "view_gamma", "resample", "jpeg", "bit_margin", "final_rotation")} == {
        "brightness": 0.15, "view_gamma": 0.2, "resample": 0.5, "jpeg": 0.5, "bit_margin": 0.0, "final_rotation": "itq",
    }  # fmt: skip
    logged = json.loads((Path(__file__).parents[1] / "docs" / "benchmarks" / "contrastive_copy_views_fashion.json").read_text())
    row = next(r for r in logged["results"] if r["tag"] == "fmnist-copy-views-itq")
    assert {k: row["params"][k] for k in ("brightness", "view_gamma", "resample", "jpeg", "final_rotation")} == {
        k: params[k] for k in ("brightness", "view_gamma", "resample", "jpeg", "final_rotation")}
    net = default_model.network_
    config = net.get_config()
    assert config["coding"] == "bihalf" and config["queue_size"] == 2048 and config["augmentation"]["blur"] == 0.25
    rebuilt = type(net).from_config(config)
    assert rebuilt.get_config() == config
    _assert_hasher_matches(default_model, digits.images)
    _assert_reload_same(default_model, tmp_path, digits.images)


def test_bihalf_bits_are_balanced_on_the_training_images(bihalf_model, digits, tmp_path):
    # the threshold is each bit's median over (a sample of) the training images
    ones = bihalf_model.hash_bits_keras(digits.images).mean(axis=0)
    assert np.all(np.abs(ones - 0.5) < 0.1)
    assert not np.allclose(bihalf_model.export_hasher().threshold, 0)
    # the threshold sits in the middle of the data, where a 2-epoch tiny network packs its
    # pre-activations densely (2-5 of 1,797 images per bit within 1e-4 of it): more
    # borderline bits than elsewhere, none of which may differ outside that band
    _assert_hasher_matches(bihalf_model, digits.images)
    _assert_reload_same(bihalf_model, tmp_path, digits.images)


def test_batch_norm_global_pooling_encoder_exports(digits):
    model = _fit(digits, batch_norm=True, global_pool=True, alignment=1.0, epochs=1, coding="sigmoid", coding_noise=4.0)
    ops = [op["op"] for op in model.export_hasher().ops]
    assert "batchnorm" in ops and "globalavgpool" in ops and "flatten" not in ops
    _assert_hasher_matches(model, digits.images)


def test_without_labels_the_validation_contrastive_loss_chooses(digits):
    model = _fit(digits, labels=False, filters=(), hidden=(32,))  # a dense encoder too
    metrics = model.summary_metrics()
    assert "val_map" not in metrics and np.isfinite(metrics["val_loss"])
    assert metrics["val_loss"] == min(model.history_["val_loss"])
    assert metrics["selected_epoch"] == 1 + int(np.argmin(model.history_["val_loss"]))
    _assert_hasher_matches(model, digits.images)


@pytest.mark.parametrize("kind", ["contrastive", "autoencoder"])
def test_two_images_per_class_leave_no_validation_split_and_still_train(kind, digits):
    # a tiny labelled folder: a 10 % stratified hold-out of 2 images per class is empty, so
    # the checkpoint cannot be chosen by validation mAP; the kind falls back to its
    # label-free choice on a random hold-out instead of scoring an empty split
    rows = np.concatenate([np.flatnonzero(digits.labels == label)[:2] for label in range(10)])
    small = dict(filters=(4,), hidden=(8,), batch_size=8) if kind == "contrastive" else dict(hidden=(16,))
    model = build_model(kind, {"input_shape": digits.image_shape, "bits": 8, "epochs": 2, **small})
    model.fit(digits.images[rows], digits.labels[rows], context=FitContext(verbose=0))
    metrics = model.summary_metrics()
    assert "val_map" not in metrics and np.isfinite(metrics["val_loss"])
    assert model.export_hasher().hash_bits(digits.images[:50]).shape == (50, 8)


def test_train_steps_set_the_epochs_unless_epochs_are_given(digits):
    params = {"input_shape": digits.image_shape, **TINY, "epochs": None, "train_steps": 30}
    model = build_model("contrastive", params).fit(digits.images[:600], context=FitContext(verbose=0))
    # 540 training images in batches of 128: 5 steps an epoch, so 6 epochs make 30 steps
    assert model.summary_metrics()["epochs"] == 6 == len(model.epoch_seconds_)


def test_seed_reproduces(digits):
    a = _fit(digits, epochs=1).export_hasher().fingerprint
    b = _fit(digits, epochs=1).export_hasher().fingerprint
    assert a == b


@pytest.mark.parametrize(
    "params, message",
    [
        ({"coding": "ternary"}, "coding must be one of"),
        ({"temperature": 0}, "temperature"),
        ({"shift": 0.7}, "shift"),
        ({"rotation": -1}, "rotation"),
        ({"filters": (), "hidden": ()}, "encoder needs a layer"),
    ],
)
def test_bad_options_are_refused(digits, params, message):
    model = build_model("contrastive", {"input_shape": digits.image_shape, **TINY, **params})
    with pytest.raises(ModelError, match=message):
        model.fit(digits.images[:100])


def test_cli_trains_on_an_image_folder(digit_folder, tmp_path):
    from semhash.cli.cmd_train import train

    args = [str(digit_folder), "--model", "contrastive", "--image-size", "8", "--bits", "8", "--epochs", "1",
            "--batch-size", "16", "--param", "filters=4x", "--param", "hidden=8x", "--name", "c8", "--quiet",
            "--home", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 0, result.output
    assert "trained c8 (contrastive, 8 bits)" in result.output
    assert (tmp_path / "models" / "c8" / "hasher.npz").exists()


# --------------------------------------------------------------------------- augmentation
def test_random_views_are_seeded_in_range_and_really_change_the_images():
    from semhash.models.augment import ViewAugmentation, random_views

    rng = np.random.default_rng(0)
    images = rng.random((6, 12, 12, 1)).astype("float32")
    aug = ViewAugmentation(erase=0.25, blur=0.2)
    a = np.asarray(random_views(images, aug, np.array([1, 2])))
    b = np.asarray(random_views(images, aug, np.array([1, 2])))
    c = np.asarray(random_views(images, aug, np.array([3, 2])))
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, images)
    off = ViewAugmentation(rotation=0, scale=0, shift=0, contrast=0, noise=0)
    np.testing.assert_array_equal(np.asarray(random_views(images, off, np.array([1, 2]))), images)


def test_views_shift_and_mirror_as_asked():
    from semhash.models.augment import ViewAugmentation, random_views

    image = np.zeros((1, 9, 9, 1), dtype="float32")
    image[0, 4, 1] = 1.0  # a dot left of the centre row
    mirror_only = ViewAugmentation(rotation=0, scale=0, shift=0, contrast=0, noise=0, flip=True)
    views = np.concatenate([np.asarray(random_views(image, mirror_only, np.array([s, 0]))) for s in range(12)])
    columns = {int(np.argmax(v[4, :, 0])) for v in views}
    assert columns == {1, 7}  # kept, or mirrored about the centre column (never moved otherwise)
    shift_only = ViewAugmentation(rotation=0, scale=0, shift=0.3, contrast=0, noise=0)
    moved = np.asarray(random_views(np.repeat(image, 8, axis=0), shift_only, np.array([5, 5])))
    centres = [np.unravel_index(np.argmax(v[..., 0]), (9, 9)) for v in moved]
    assert len(set(centres)) > 1 and all(abs(r - 4) <= 3 and abs(c - 1) <= 3 for r, c in centres)


# --------------------------------------------------------------------------- loss and codings
def test_views_take_the_edits_a_copy_goes_through_when_asked():
    from semhash.models.augment import ViewAugmentation, random_views

    rng = np.random.default_rng(1)
    images = (0.2 + 0.4 * rng.random((8, 16, 16, 1))).astype("float32")  # no clipping at x1.5
    still = dict(rotation=0, scale=0, shift=0, contrast=0, noise=0)
    brighter = np.asarray(random_views(images, ViewAugmentation(**still, brightness=0.5), np.array([1, 2])))
    ratio = brighter / images
    per_image = ratio.reshape(8, -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-5)  # one factor per image
    assert per_image.min() >= 0.5 - 1e-6 and per_image.max() <= 1.5 + 1e-6 and per_image[:, 0].std() > 0.05
    for edit in (dict(gamma=0.5), dict(resample=0.6), dict(jpeg=0.9)):
        aug = ViewAugmentation(**still, **edit)
        views = [np.asarray(random_views(images, aug, np.array([s, 4]))) for s in range(6)]
        assert all(v.min() >= 0 and v.max() <= 1 for v in views), edit
        assert not all(np.allclose(v, images) for v in views), edit  # (resampling: half the time, per half batch)
        np.testing.assert_array_equal(views[3], np.asarray(random_views(images, aug, np.array([3, 4]))))
    # the copy edits draw from seeds of their own: switching one on leaves the others' draws
    base = ViewAugmentation(rotation=10, scale=0, shift=0, contrast=0, noise=0)
    rotated = np.asarray(random_views(images, base, np.array([5, 6])))
    both = np.asarray(random_views(images, ViewAugmentation(rotation=10, scale=0, shift=0, contrast=0, noise=0, brightness=0.3),
                                   np.array([5, 6])))  # fmt: skip
    factor = (both.reshape(8, -1).sum(1) / np.maximum(rotated.reshape(8, -1).sum(1), 1e-6))
    assert np.allclose(both, np.clip(rotated * factor[:, None, None, None], 0, 1), atol=1e-4)
    with pytest.raises(ModelError, match="brightness, resample and jpeg"):
        ViewAugmentation(jpeg=1.0)


def test_bit_margin_is_zero_off_the_threshold_positive_near_it_and_scale_free():
    from semhash.models.contrastive import bit_margin_loss

    agree = np.array([[3.0, -2.0], [2.5, 3.0], [-3.0, 2.0], [-2.0, -3.0]] * 2, "float32")  # views 1 then 2, the same sides
    assert float(bit_margin_loss(agree)) == pytest.approx(0.0, abs=1e-6)
    straddle = agree.copy()
    straddle[4, 0] = -0.1  # view 2 of image 0 crosses to the other side of the median, just
    loss = float(bit_margin_loss(straddle))
    assert loss > 0
    assert float(bit_margin_loss(10.0 * straddle)) == pytest.approx(loss, rel=1e-4)


def test_an_itq_final_rotation_folds_into_the_contrastive_coding_layer(digits):
    model = build_model("contrastive", {"input_shape": digits.image_shape, **TINY, "final_rotation": "itq", "bit_margin": 1.0,
                                        "brightness": 0.1, "view_gamma": 0.2, "resample": 0.4, "jpeg": 0.3})  # fmt: skip
    model.fit(digits.images[:600], digits.labels[:600])
    before, after = model.summary_metrics()["itq_quantization_loss"]
    assert after <= before
    _assert_hasher_matches(model, digits.images)
    with pytest.raises(ModelError, match="final_rotation"):
        build_model("contrastive", {"input_shape": digits.image_shape, **TINY, "final_rotation": "pca"}).fit(digits.images[:64])
    with pytest.raises(ModelError, match="bit_margin"):
        build_model("contrastive", {"input_shape": digits.image_shape, **TINY, "bit_margin": -1}).fit(digits.images[:64])


def test_nt_xent_matches_a_numpy_reference():
    from semhash.models.contrastive import nt_xent

    rng = np.random.default_rng(1)
    codes = rng.normal(size=(8, 5)).astype("float32")
    z = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    logits = z @ z.T / 0.5
    np.fill_diagonal(logits, -np.inf)
    partner = np.r_[np.arange(4, 8), np.arange(0, 4)]
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(8), partner].mean()
    assert abs(float(nt_xent(codes, 0.5)) - expected) < 1e-5
    # two views with the same code, far from the others: a small loss
    same = np.concatenate([np.eye(4, 5), np.eye(4, 5)]).astype("float32") * 2 - 1
    assert float(nt_xent(same, 0.1)) < 0.05 < float(nt_xent(codes, 0.1))


def test_bihalf_splits_every_bit_half_half_with_its_gradient():
    from semhash.models.codings import bihalf_sign
    from semhash.models.tf_common import tf

    u = tf.constant(np.random.default_rng(2).normal(size=(10, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(u)
        b = bihalf_sign(u, gamma=6.0)
        loss = tf.reduce_sum(b * tf.constant(np.arange(30, dtype="float32").reshape(10, 3)))
    b = np.asarray(b)
    assert np.all((b == 1).sum(axis=0) == 5)
    # the larger half of each column is +1
    for j in range(3):
        column = np.asarray(u)[:, j]
        assert set(np.flatnonzero(b[:, j] == 1)) == set(np.argsort(-column)[:5])
    expected = np.arange(30, dtype="float32").reshape(10, 3) + 6.0 * (np.asarray(u) - b) / 30
    np.testing.assert_allclose(np.asarray(tape.gradient(loss, u)), expected, rtol=1e-5)


def test_straight_through_sign_is_hard_forward_tanh_backward():
    from semhash.models.codings import straight_through_sign
    from semhash.models.tf_common import tf

    z = tf.constant([-2.0, -0.1, 0.0, 0.3, 3.0])
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = straight_through_sign(z)
    np.testing.assert_array_equal(np.asarray(out), [-1, -1, -1, 1, 1])
    np.testing.assert_allclose(np.asarray(tape.gradient(out, z)), 1 - np.tanh(np.asarray(z, dtype=np.float64)) ** 2, atol=1e-6)


# --------------------------------------------------------------------------- the autoencoder's codings
@pytest.mark.parametrize(
    "params",
    [dict(coding="bihalf"), dict(coding="sign", noise=1.0), dict(conv=True, filters=(4,)), dict(conv=True, filters=(4,), tied=False)],
    ids=["bihalf", "sign", "conv-tied", "conv-untied"],
)
def test_autoencoder_coding_and_conv_options_export_and_reload(params, digits, tmp_path):
    model = build_model("autoencoder", {"input_shape": digits.image_shape, "bits": 12, "hidden": (32, 16), "epochs": 2, **params})
    model.fit(digits.images, digits.labels, context=FitContext(verbose=0))
    assert model.reconstruct(digits.images[:3]).shape == (3, 8, 8, 1)
    hasher = model.export_hasher()
    assert hasher.info["coding"] == params.get("coding", "sigmoid")
    if params.get("conv"):
        assert [op["op"] for op in hasher.ops][:3] == ["conv2d", "activation", "maxpool2d"]
    if params.get("coding") == "bihalf":
        ones = model.hash_bits_keras(digits.images).mean(axis=0)
        assert np.all(np.abs(ones - 0.5) < 0.1)
    _assert_hasher_matches(model, digits.images)
    _assert_reload_same(model, tmp_path, digits.images)


def test_autoencoder_conv_refuses_layerwise_pretraining(digits):
    model = build_model("autoencoder", {"input_shape": digits.image_shape, "conv": True, "pretrain": "gaussian", "epochs": 1})
    with pytest.raises(ModelError, match="needs a dense encoder"):
        model.fit(digits.images[:50])


# --------------------------------------------------------------------------- pretrained-classifier
def test_pretrained_classifier_on_a_contrastive_encoder(sign_model, digits, tmp_path):
    workspace = Workspace(tmp_path / "home")
    directory = workspace.model_dir("enc")
    directory.mkdir(parents=True)
    sign_model.save(directory)
    sign_model.export_hasher().save(directory / "hasher.npz")
    (directory / "meta.json").write_text(
        '{"name": "enc", "kind": "contrastive", "bits": 12, "dataset": "digits", "input_shape": [8, 8, 1]}'
    )
    test_x, test_y = digits.part("query")
    params = dict(input_shape=digits.image_shape, bits=10, encoder="enc", epochs=1, fine_tune=False, labeled_fraction=0.2)
    model = build_model("pretrained-classifier", params)
    model.fit(digits.images, digits.labels, context=FitContext(workspace=workspace, verbose=0, test_images=test_x, test_labels=test_y))
    metrics = model.summary_metrics()
    for key in ("accuracy", "accuracy_frozen", "accuracy_scratch_same_labels", "accuracy_scratch_all_labels"):
        assert 0 <= metrics[key] <= 1
    assert model.network_.filters == (4, 8) and model.encoder_info_["filters"] == [4, 8]
    # without fine-tuning the encoder's layers stay exactly as copied (frozen)
    source = {layer.name: layer.get_weights() for layer in sign_model.network_.feature_layers}
    for layer in model.network_.feature_layers:
        for got, want in zip(layer.get_weights(), source[layer.name]):
            np.testing.assert_array_equal(got, want)
    assert sum(len(layer.get_weights()) for layer in model.network_.feature_layers) == 6  # 2 conv + 1 dense
    _assert_hasher_matches(model, digits.images)
    (tmp_path / "saved").mkdir()
    _assert_reload_same(model, tmp_path / "saved", digits.images)


def test_pretrained_classifier_self_labels_with_the_encoders_clusters(sign_model, digits, tmp_path):
    workspace = Workspace(tmp_path / "home")
    directory = workspace.model_dir("enc")
    directory.mkdir(parents=True)
    sign_model.save(directory)
    (directory / "meta.json").write_text('{"name": "enc", "kind": "contrastive", "bits": 12, "dataset": "digits", "input_shape": [8, 8, 1]}')
    params = dict(input_shape=digits.image_shape, bits=10, encoder="enc", epochs=1, fine_tune=False, pseudo_labels=6)
    model = build_model("pretrained-classifier", params)
    scrambled = np.random.default_rng(0).permutation(digits.labels)  # the labels given are not used
    model.fit(digits.images, scrambled, context=FitContext(workspace=workspace, verbose=0))
    metrics = model.summary_metrics()
    assert metrics["pseudo_labels"]["clusters"] == 6 and sum(metrics["pseudo_labels"]["sizes"]) == len(digits.images)
    assert "accuracy_scratch_all_labels" not in metrics and model.network_.n_classes == 6
    again = build_model("pretrained-classifier", params).fit(digits.images, digits.labels, context=FitContext(workspace=workspace, verbose=0))
    np.testing.assert_array_equal(again.export_hasher().hash(digits.images), model.export_hasher().hash(digits.images))
    _assert_hasher_matches(model, digits.images)
    with pytest.raises(ModelError, match="pseudo_labels"):
        build_model("pretrained-classifier", {**params, "pseudo_labels": 1}).fit(digits.images, digits.labels,
                                                                                 context=FitContext(workspace=workspace, verbose=0))  # fmt: skip


def test_input_blur_is_a_fixed_gaussian_that_exports_and_reaches_the_classifier(digits, tmp_path):
    model = _fit(digits, input_blur=1.0, epochs=1, coding="sign")
    blur = model.network_.feature_layers[0]
    assert blur.name == "input_blur" and not blur.trainable
    kernel = np.asarray(blur.get_weights()[0])
    assert kernel.shape == (5, 5, 1, 1) and abs(kernel.sum() - 1) < 1e-6 and kernel[2, 2, 0, 0] == kernel.max()
    assert [op["op"] for op in model.export_hasher().ops][:2] == ["conv2d", "conv2d"]
    _assert_hasher_matches(model, digits.images)
    again = _assert_reload_same(model, tmp_path, digits.images)
    np.testing.assert_array_equal(np.asarray(again.network_.feature_layers[0].get_weights()[0]), kernel)
    from semhash.models.pretrained_classifier import encoder_spec

    assert encoder_spec(model)["input_blur"] == 1.0 and "input_blur" in encoder_spec(model)["weights"]
