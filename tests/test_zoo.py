"""Model zoo: autoencoder pretraining/sparsity, vae, classifier-hash, pretrained-classifier,
``semhash generate`` and ``semhash inspect``.

Everything trains on scikit-learn's 1,797 8x8 digits for one epoch with tiny layers; each
model is fitted once per module.  The exported NumPy Hasher must give exactly the bits the
Keras model computes, on all 1,797 images, and a saved/reloaded model the same bits again.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from click.testing import CliRunner  # noqa: E402

from semhash.data import load_builtin  # noqa: E402
from semhash.errors import ModelError  # noqa: E402
from semhash.models import KINDS, build_model, get_kind  # noqa: E402
from semhash.models.base import FitContext  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return load_builtin("digits")


def _context(digits, workspace=None, with_test=True):
    test_x, test_y = digits.part("query")
    return FitContext(
        workspace=workspace,
        verbose=0,
        class_names=digits.class_names,
        test_images=test_x if with_test else None,
        test_labels=test_y if with_test else None,
    )


def _fit(kind, digits, params, context=None):
    model = build_model(kind, {**params, "input_shape": digits.image_shape})
    return model.fit(digits.images, digits.labels, context=context or _context(digits))


def _save_in_workspace(workspace, name, model, digits):
    """What `semhash train` leaves behind, minus the evaluation: model files, hasher, meta."""
    directory = workspace.model_dir(name)
    directory.mkdir(parents=True)
    model.save(directory)
    hasher = model.export_hasher()
    hasher.save(directory / "hasher.npz")
    meta = {"name": name, "kind": model.kind, "bits": hasher.n_bits, "dataset": "digits", "input_shape": list(digits.image_shape)}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


# A pre-activation within float32 rounding of the threshold may round either way in Keras
# (TensorFlow's conv kernels sum in another order than NumPy's matmul): only there may a
# bit differ, and such bits must be rare.  (Many codings may sit near a threshold, e.g. a
# collapsed VAE dimension at its median: they must still agree almost everywhere.)
BORDERLINE = 1e-4


def _assert_hasher_matches(model, images):
    assert len(images) >= 1000
    keras_bits = model.hash_bits_keras(images)
    hasher = model.export_hasher()
    numpy_bits = hasher.hash_bits(images)
    assert keras_bits.shape == numpy_bits.shape == (len(images), model.bits)
    borderline = np.abs(hasher.transform(images) - hasher.threshold) < BORDERLINE
    np.testing.assert_array_equal(numpy_bits[~borderline], keras_bits[~borderline])
    differ = int((numpy_bits != keras_bits).sum())
    assert differ <= max(1, numpy_bits.size // 1000), f"{differ} of {numpy_bits.size} bits differ"


def _assert_reload_same(model, tmp_path, images):
    paths = model.save(tmp_path)
    assert all(p.exists() for p in paths)
    again = type(model).load(tmp_path)
    np.testing.assert_array_equal(again.hash_bits_keras(images), model.hash_bits_keras(images))
    assert again.export_hasher().fingerprint == model.export_hasher().fingerprint
    assert again.summary_metrics() == model.summary_metrics()
    return again


# --------------------------------------------------------------------------- registry
def test_registry_has_the_zoo_kinds():
    for kind in ("vae", "classifier-hash", "pretrained-classifier"):
        assert kind in KINDS
        cls = get_kind(kind)
        assert cls.kind == kind
        for common in ("input_shape", "bits", "epochs", "batch_size", "learning_rate", "validation_split", "patience", "seed"):
            assert common in cls.param_names()
    assert get_kind("classifier-hash").needs_labels and get_kind("pretrained-classifier").needs_labels
    assert not get_kind("vae").needs_labels


# --------------------------------------------------------------------------- autoencoder
def test_autoencoder_defaults_unchanged():
    model = build_model("autoencoder", {})
    assert model.pretrain is None and model.sparsity == 0
    net = model._build_network()
    assert net.sparsity == 0 and "sparsity" in net.get_config()


def test_greedy_pretraining_fills_encoder_and_mirror_decoder(digits):
    from semhash.models.autoencoder import SemanticHashingAutoencoder
    from semhash.models.pretraining import greedy_pretrain

    net = SemanticHashingAutoencoder(image_shape=(8, 8, 1), hidden=(16,), bits=6, seed=0)
    net.build((None, 8, 8, 1))
    before = [np.array(w) for w in net.get_weights()]
    histories = greedy_pretrain(net, digits.images[:300], corruption="dropout", keep_prob=0.8, epochs=1, seed=0)
    assert len(histories) == 2 and all("loss" in h for h in histories)
    after = net.get_weights()
    # every kernel (encoder 0, coding, decoder 0 = coding's mirror, decoder 1 = encoder 0's) moved
    kernels = [i for i, w in enumerate(before) if w.ndim == 2]
    assert len(kernels) == 4
    for i in kernels:
        assert not np.allclose(before[i], after[i])


@pytest.fixture(scope="module")
def autoencoder(digits):
    params = dict(bits=12, hidden=(32, 16), epochs=1, pretrain="gaussian", pretrain_epochs=1, tied=True, sparsity=0.05)
    return _fit("autoencoder", digits, params)


def test_autoencoder_pretrained_sparse_exports_and_reloads(autoencoder, digits, tmp_path):
    assert len(autoencoder.pretrain_history_) == 3  # two hidden layers + the coding layer
    metrics = autoencoder.summary_metrics()
    assert {"val_loss", "bits_mean_ones", "bits_balance"} <= set(metrics)
    _assert_hasher_matches(autoencoder, digits.images)
    _assert_reload_same(autoencoder, tmp_path, digits.images)


def test_autoencoder_rejects_unknown_pretraining(digits):
    model = build_model("autoencoder", {"input_shape": digits.image_shape, "pretrain": "masking", "epochs": 1})
    with pytest.raises(ModelError, match="pretrain"):
        model.fit(digits.images[:50])


# --------------------------------------------------------------------------- vae
def test_vae_bits_is_latent_dim():
    assert build_model("vae", {}).bits == 30
    assert build_model("vae", {"latent_dim": 2}).bits == 2
    assert build_model("vae", {"bits": 16}).latent_dim == 16
    with pytest.raises(ModelError, match="must equal latent_dim"):
        build_model("vae", {"bits": 16, "latent_dim": 2})


@pytest.fixture(scope="module")
def vae(digits):
    return _fit("vae", digits, dict(bits=8, hidden=(32,), epochs=1))


@pytest.fixture(scope="module")
def conv_vae2(digits):
    return _fit("vae", digits, dict(latent_dim=2, conv=True, filters=(4, 8), hidden=(16,), epochs=1, validation_split=0))


@pytest.mark.parametrize("which", ["vae", "conv_vae2"])
def test_vae_hasher_matches_keras_and_bits_are_balanced(which, request, digits, tmp_path):
    model = request.getfixturevalue(which)
    # median thresholds sit where a 1-epoch network packs μ densely (15 of 14,376 bits within
    # 1e-4 of it here): more borderline bits than elsewhere, none may differ outside that band
    _assert_hasher_matches(model, digits.images)
    # thresholds are medians of μ over the training images: every bit is on for half of them
    train_x = digits.images if model.validation_split == 0 else None
    if train_x is not None:
        ones = model.hash_bits_keras(train_x).mean(axis=0)
        np.testing.assert_allclose(ones, 0.5, atol=1.0 / len(train_x))
    assert model.summary_metrics()["bits_balance"] > 0.99
    again = _assert_reload_same(model, tmp_path, digits.images)
    np.testing.assert_allclose(again.generate(4, seed=1), model.generate(4, seed=1), atol=1e-6)


def test_vae_generates_and_decodes(conv_vae2):
    images = conv_vae2.generate(5, seed=3)
    assert images.shape == (5, 8, 8, 1) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_allclose(conv_vae2.generate(5, seed=3), images)
    assert conv_vae2.decode(np.zeros((2, 2))).shape == (2, 8, 8, 1)
    ops = [op["op"] for op in conv_vae2.export_hasher().ops]
    assert ops[:2] == ["conv2d", "activation"] and ops.count("conv2d") == 2


# --------------------------------------------------------------------------- classifier-hash
@pytest.fixture(scope="module")
def classifier(digits):
    params = dict(bits=12, filters=(4, 8), dense_units=16, epochs=1, min_steps=0, labeled_fraction=0.5, validation_split=0.1)
    return _fit("classifier-hash", digits, params)


def test_classifier_hash_exports_reloads_and_reports(classifier, digits, tmp_path):
    _assert_hasher_matches(classifier, digits.images)
    ops = [op["op"] for op in classifier.export_hasher().ops]
    assert {"conv2d", "batchnorm", "maxpool2d", "flatten", "dense"} <= set(ops)
    metrics = classifier.summary_metrics()
    n_train = len(digits.images) - round(0.1 * len(digits.images))
    assert abs(metrics["labeled_images"] - 0.5 * n_train) <= 10  # stratified half of the training rows
    assert 0 <= metrics["val_accuracy"] <= 1 and metrics["accuracy"] == metrics["test_accuracy"]
    confusion = np.asarray(classifier.confusion_)
    assert confusion.shape == (10, 10) and confusion.sum() == len(digits.part("query")[0])
    again = _assert_reload_same(classifier, tmp_path, digits.images)
    assert again.confusion_ == classifier.confusion_


def test_classifier_augmentation_and_cosine_schedule(digits, tmp_path):
    # flip and shifts are training-only: skipped by the export, so NumPy == Keras still holds
    params = dict(bits=12, filters=(4,), dense_units=0, epochs=2, min_steps=0, flip=True, augment=0.1, lr_schedule="cosine")
    model = _fit("classifier-hash", digits, params)
    names = [layer.name for layer in model.network_.feature_layers]
    assert names[:2] == ["flip", "augment"]
    _assert_hasher_matches(model, digits.images)
    assert float(model.network_.optimizer.learning_rate) < 1e-6  # decayed to 0 over the planned steps
    # the default: no validation hold-out, every labelled image trains, accuracy from the test set
    metrics = model.summary_metrics()
    assert metrics["labeled_images"] == len(digits.images) and "val_accuracy" not in metrics
    assert metrics["accuracy"] == metrics["test_accuracy"]
    _assert_reload_same(model, tmp_path, digits.images)


def test_few_labels_train_for_at_least_min_steps():
    from semhash.models.classifier import epochs_for

    assert epochs_for(60_000, 30, 128, 1000) == 30  # 469 steps an epoch: the epochs rule
    assert epochs_for(360, 30, 128, 1000) == 334  # 3 steps an epoch: 1,002 steps
    assert epochs_for(360, 30, 128, 0) == 30


def test_unknown_learning_rate_schedule_is_refused(digits):
    model = build_model("classifier-hash", {"input_shape": digits.image_shape, "epochs": 1, "lr_schedule": "warm"})
    with pytest.raises(ModelError, match="unknown learning-rate schedule 'warm'"):
        model.fit(digits.images, digits.labels)


def test_classifier_needs_labels(digits):
    model = build_model("classifier-hash", {"input_shape": digits.image_shape, "epochs": 1})
    with pytest.raises(ModelError, match="labelled"):
        model.fit(digits.images, None)


def test_labeled_subset_is_stratified_and_seeded():
    from semhash.models.keras_common import labeled_subset

    labels = np.repeat(np.arange(5), 40)
    rows = labeled_subset(labels, 0.1, seed=0)
    assert np.bincount(labels[rows]).tolist() == [4] * 5
    np.testing.assert_array_equal(rows, labeled_subset(labels, 0.1, seed=0))
    assert not np.array_equal(rows, labeled_subset(labels, 0.1, seed=1))


# --------------------------------------------------------------------------- pretrained-classifier
@pytest.fixture(scope="module")
def zoo_workspace(tmp_path_factory, digits, autoencoder):
    workspace = Workspace(tmp_path_factory.mktemp("zoo-home"))
    _save_in_workspace(workspace, "ae", autoencoder, digits)
    return workspace


@pytest.fixture(scope="module")
def pretrained(digits, zoo_workspace):
    params = dict(bits=10, encoder="ae", epochs=1, fine_tune_epochs=1, labeled_fraction=0.2, validation_split=0.1)
    return _fit("pretrained-classifier", digits, params, _context(digits, zoo_workspace))


def test_pretrained_classifier_reports_beside_baselines(pretrained, autoencoder, digits, tmp_path):
    metrics = pretrained.summary_metrics()
    for key in ("accuracy", "accuracy_frozen", "accuracy_fine_tuned", "accuracy_scratch_same_labels", "accuracy_scratch_all_labels"):
        assert 0 <= metrics[key] <= 1
    assert metrics["test_set"] == "test"
    assert pretrained.network_.hidden == autoencoder.network_.hidden
    _assert_hasher_matches(pretrained, digits.images)
    _assert_reload_same(pretrained, tmp_path, digits.images)


def test_pretrained_classifier_freezes_the_encoder_layers():
    from semhash.models.pretrained_classifier import DenseHashClassifier

    net = DenseHashClassifier(image_shape=(8, 8, 1), hidden=(16, 8), bits=4, n_classes=3, frozen=True)
    net.build((None, 8, 8, 1))
    assert len(net.trainable_weights) == 4  # coding + output kernels and biases
    net.frozen = False
    assert len(net.trainable_weights) == 8


def test_pretrained_classifier_needs_an_autoencoder(digits, zoo_workspace):
    model = build_model("pretrained-classifier", {"input_shape": digits.image_shape, "epochs": 1})
    with pytest.raises(ModelError, match="--encoder"):
        model.fit(digits.images, digits.labels, context=_context(digits, zoo_workspace))
    model = build_model("pretrained-classifier", {"input_shape": digits.image_shape, "encoder": "nope"})
    with pytest.raises(ModelError, match="no model named"):
        model.fit(digits.images, digits.labels, context=_context(digits, zoo_workspace))


# --------------------------------------------------------------------------- generate / inspect
def test_generate_grid_and_2d_latent_figures(conv_vae2, digits, tmp_path):
    from semhash.generate import generate_grid

    images, labels = digits.part("query")
    paths = generate_grid(conv_vae2, 12, tmp_path / "grid.png", seed=0, images=images, labels=labels)
    assert [p.name for p in paths] == ["grid.png", "grid-manifold.png", "grid-latent.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_generate_refuses_non_generative_models(autoencoder, tmp_path):
    from semhash.generate import generate_grid

    with pytest.raises(ModelError, match="cannot generate"):
        generate_grid(autoencoder, 4, tmp_path / "grid.png")


def test_inspect_figures(autoencoder, classifier, digits, tmp_path):
    from semhash.inspect_model import inspect_model

    images, labels = digits.part("database")
    names = {p.name for p in inspect_model(autoencoder, tmp_path / "ae", images, labels)}
    assert {"reconstructions.png", "features.png", "coding_units.png", "metrics.json"} <= names
    names = {p.name for p in inspect_model(classifier, tmp_path / "clf", images, labels)}
    assert {"features.png", "coding_units.png", "confusion_matrix.png", "metrics.json"} <= names
    assert "reconstructions.png" not in names


def test_cli_generate_and_inspect(zoo_workspace, conv_vae2, classifier, digits, tmp_path):
    from semhash.cli.cmd_zoo import generate, inspect

    _save_in_workspace(zoo_workspace, "vae2", conv_vae2, digits)
    _save_in_workspace(zoo_workspace, "clf", classifier, digits)
    home = ["--home", str(zoo_workspace.root)]
    runner = CliRunner()
    result = runner.invoke(generate, ["--model", "vae2", "--n", "9", "-o", str(tmp_path / "g.png"), *home])
    assert result.exit_code == 0, result.output
    assert "g-manifold.png" in result.output and "g-latent.png" in result.output
    result = runner.invoke(generate, ["--model", "clf", "-o", str(tmp_path / "x.png"), *home])
    assert result.exit_code == 1 and "cannot generate" in result.output
    result = runner.invoke(inspect, ["clf", "-o", str(tmp_path / "insp"), *home])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "insp" / "confusion_matrix.png").exists()
    result = runner.invoke(inspect, ["missing", *home])
    assert result.exit_code == 1 and "no model named" in result.output
