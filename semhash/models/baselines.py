"""Classic unsupervised hashing baselines in NumPy / scikit-learn (no TensorFlow).

Every baseline is a linear projection of the centred, flattened image followed by a sign:
``bit_j = ((x - mean) @ W)_j > 0``.  They differ only in how ``W`` (input_dim x bits) is
chosen:

* ``lsh``  -- random Gaussian hyperplanes (Charikar's sign random projections), seeded;
* ``pcah`` -- the top ``bits`` principal directions (PCA hashing);
* ``itq``  -- the top ``bits`` principal directions followed by the orthogonal rotation
  ``R`` that minimises the quantisation loss ``||B - V R||_F^2`` (Gong & Lazebnik,
  "Iterative Quantization", CVPR 2011), found by alternating ``B = sign(V R)`` with an
  orthogonal Procrustes step for ``itq_iterations`` iterations.

All of them fit in seconds and export to the same :class:`semhash.inference.Hasher` as the
neural kinds: ``[flatten, dense(W, -mean @ W)]`` with threshold 0.  The model's own codes
(:meth:`LinearHashModel.hash`) are computed with exactly the exported float32 weights, so
model and Hasher agree bit for bit.

Files written by :meth:`save`: ``params.json`` (the constructor arguments) and
``weights.npz`` (``mean``, ``projection`` and, for ITQ, ``pca_components``, ``rotation``,
``quantization_loss``).
"""

from __future__ import annotations

import json
from abc import abstractmethod
import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from semhash.errors import ModelError
from semhash.hashing import bits_to_codes, check_bits
from semhash.models.base import FitContext, HashModel, save_params_json

WEIGHTS_FILE = "weights.npz"
_BATCH = 2048  # rows per matrix product, as in semhash.inference

__all__ = ["LinearHashModel", "LSHHashModel", "PCAHashModel", "ITQHashModel", "itq_rotation"]


class LinearHashModel(HashModel):
    """Shared machinery: ``bits = (x - mean_) @ projection_ > 0``.

    Subclasses implement :meth:`_learn_projection`, returning the (input_dim, bits) matrix
    from the centred float64 data.
    """

    needs_labels: ClassVar[bool] = False
    uses_tensorflow: ClassVar[bool] = False
    #: extra arrays (attribute name without the trailing underscore) saved in weights.npz
    _extra_arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self, input_shape: Sequence[int] = (28, 28, 1), bits: int = 30, seed: int = 0):
        self.input_shape = input_shape
        self.bits = bits
        self.seed = seed

    # -- shapes ------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        return int(np.prod(tuple(int(s) for s in self.input_shape)))

    def _flatten(self, images) -> np.ndarray:
        images = np.asarray(images)
        shape = tuple(int(s) for s in self.input_shape)
        if images.ndim == len(shape) and shape[-1] == 1 and images.shape[1:] == shape[:-1]:
            images = images[..., None]  # (N, H, W) for single-channel input
        if images.ndim < 2 or int(np.prod(images.shape[1:])) != self.input_dim:
            raise ModelError(
                f"{self.kind}: images have shape {images.shape[1:]}, the model wants {shape}"
            )
        return images.reshape(len(images), -1)

    def _check_bits(self) -> int:
        try:
            return check_bits(self.bits)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{self.kind}: {exc}") from None

    # -- learning ----------------------------------------------------------------------
    @abstractmethod
    def _learn_projection(self, centred: np.ndarray, context: FitContext) -> np.ndarray:
        """(N, D) centred pixels -> (D, bits) projection whose signs are the bits."""

    def fit(self, images, labels=None, *, context: FitContext | None = None):
        """Learn ``mean_`` and ``projection_`` from ``images`` (labels are ignored)."""
        context = context or FitContext()
        bits = self._check_bits()
        x = self._flatten(images).astype(np.float64)
        if len(x) < 2:
            raise ModelError(f"{self.kind}: need at least 2 images to fit, got {len(x)}")
        started = time.time()
        context.log(f"fitting {self.kind} ({bits} bits) on {len(x)} images of {x.shape[1]} values (NumPy)")
        self.history_ = {}
        mean = x.mean(axis=0)
        x -= mean  # centred in place (x is our own float64 copy)
        projection = np.asarray(self._learn_projection(x, context), dtype=np.float64)
        if projection.shape != (x.shape[1], bits):
            raise AssertionError(f"projection has shape {projection.shape}, expected {(x.shape[1], bits)}")
        self.mean_ = mean.astype(np.float32)
        self.projection_ = projection.astype(np.float32)
        # the exported bias, computed once in float32 so that model and Hasher agree exactly
        self.bias_ = (-(self.mean_.astype(np.float64) @ self.projection_.astype(np.float64))).astype(np.float32)
        self.n_train_images_ = int(len(x))
        self.train_seconds_ = time.time() - started
        self.device_ = "CPU (NumPy)"
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "projection_"):
            raise ModelError(f"{self.kind}: the model is not fitted yet (call fit first)")

    # -- codes -------------------------------------------------------------------------
    def transform(self, images) -> np.ndarray:
        """(N, ...) images -> (N, bits) float32 projections; a bit is 1 where > 0."""
        self._check_fitted()
        x = self._flatten(images).astype(np.float32, copy=False)
        if len(x) == 0:
            return np.zeros((0, self.projection_.shape[1]), dtype=np.float32)
        out = [x[s : s + _BATCH] @ self.projection_ + self.bias_ for s in range(0, len(x), _BATCH)]
        return np.concatenate(out).astype(np.float32, copy=False)

    def hash_bits(self, images) -> np.ndarray:
        return (self.transform(images) > 0).astype(np.uint8)

    def hash(self, images) -> np.ndarray:
        """(N,) uint64 codes, identical to ``export_hasher().hash(images)``."""
        return bits_to_codes(self.hash_bits(images))

    def export_hasher(self):
        from semhash.inference import Hasher

        self._check_fitted()
        ops = [{"op": "flatten"}, {"op": "dense"}]
        params = {"op1.kernel": self.projection_, "op1.bias": self.bias_}
        shape = tuple(int(s) for s in self.input_shape)
        info = {"kind": self.kind, "coding": "linear-sign"}
        return Hasher(ops, params, self.projection_.shape[1], shape, 0.0, info=info)

    def summary_metrics(self) -> dict[str, Any]:
        if not hasattr(self, "projection_"):
            return {}
        return {"fit_seconds": float(getattr(self, "train_seconds_", float("nan")))}

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: Path) -> list[Path]:
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean_, "projection": self.projection_, "bias": self.bias_,
                  "n_train_images": np.asarray(getattr(self, "n_train_images_", 0), dtype=np.int64)}
        for name in self._extra_arrays:
            arrays[name] = np.asarray(getattr(self, name + "_"))
        path = directory / WEIGHTS_FILE
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return [path, save_params_json(self, directory)]

    @classmethod
    def load(cls, directory: Path) -> "LinearHashModel":
        directory = Path(directory)
        try:
            params = json.loads((directory / "params.json").read_text())
        except FileNotFoundError:
            raise ModelError(f"{directory}: no params.json (not a saved {cls.kind} model)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{directory / 'params.json'}: unreadable ({exc})") from None
        if "input_shape" in params:
            params["input_shape"] = tuple(params["input_shape"])
        model = cls(**params)
        try:
            with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as data:
                model.mean_ = data["mean"].astype(np.float32)
                model.projection_ = data["projection"].astype(np.float32)
                model.bias_ = data["bias"].astype(np.float32)
                if "n_train_images" in data.files:
                    model.n_train_images_ = int(data["n_train_images"])
                for name in cls._extra_arrays:
                    setattr(model, name + "_", data[name])
        except FileNotFoundError:
            raise ModelError(f"{directory}: no {WEIGHTS_FILE} (not a saved {cls.kind} model)") from None
        except KeyError as exc:
            raise ModelError(f"{directory / WEIGHTS_FILE}: missing array {exc}") from None
        losses = getattr(model, "quantization_loss_", None)
        model.history_ = {} if losses is None else {"quantization_loss": np.asarray(losses).tolist()}
        return model


class LSHHashModel(LinearHashModel):
    """Sign random projections: ``bits`` Gaussian hyperplanes through the data mean."""

    kind = "lsh"
    description = "baseline: random hyperplanes through the data mean (sign random projections, NumPy)"

    def _learn_projection(self, centred, context):
        rng = np.random.default_rng(self.seed)
        w = rng.standard_normal((centred.shape[1], int(self.bits)))
        return w / np.linalg.norm(w, axis=0, keepdims=True)


def _pca(centred: np.ndarray, n_components: int, seed: int, kind: str):
    """Top principal directions of already-centred data -> (components (k, D), explained
    variance ratio (k,)).  Signs follow scikit-learn's deterministic convention."""
    from sklearn.decomposition import PCA

    n, d = centred.shape
    limit = min(n, d)
    if n_components > limit:
        raise ModelError(
            f"{kind}: {n_components} bits need {n_components} principal components, but "
            f"{n} images of {d} values have at most {limit}; use --bits {limit} or fewer (or --model lsh)"
        )
    # the exact covariance eigendecomposition is the fastest for image-sized inputs
    # (784 values: ~1 s for 60,000 images) and deterministic; sklearn picks otherwise
    solver = "covariance_eigh" if d <= 2048 else "auto"
    pca = PCA(n_components=n_components, svd_solver=solver, random_state=seed)
    pca.fit(centred)
    return pca.components_.astype(np.float64), pca.explained_variance_ratio_.astype(np.float64)


class PCAHashModel(LinearHashModel):
    """PCA hashing: the sign of each of the top ``bits`` principal components."""

    kind = "pcah"
    description = "baseline: signs of the top principal components (PCA hashing, scikit-learn)"
    _extra_arrays = ("explained_variance_ratio",)

    def _learn_projection(self, centred, context):
        components, ratio = _pca(centred, int(self.bits), self.seed, self.kind)
        self.explained_variance_ratio_ = ratio
        return components.T

    def summary_metrics(self) -> dict[str, Any]:
        out = super().summary_metrics()
        if hasattr(self, "explained_variance_ratio_"):
            out["explained_variance"] = float(np.sum(self.explained_variance_ratio_))
        return out


def itq_rotation(v: np.ndarray, iterations: int = 50, seed: int = 0):
    """Gong & Lazebnik's iterative quantisation on PCA-projected data ``v`` (N, c).

    Starts from a seeded random orthogonal ``R`` and alternates ``B = sign(V R)`` (0 -> +1)
    with the orthogonal Procrustes solution ``R = argmax tr(B^T V R)``: with
    ``B^T V = U S W^T``, ``R = W U^T``.  Returns ``(R, losses)`` where ``losses[k]`` is the
    quantisation loss ``||sign(V R_k) - V R_k||_F^2`` of the k-th rotation (k = 0 is the
    random start); it never increases.
    """
    v = np.asarray(v, dtype=np.float64)
    c = v.shape[1]
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((c, c)))
    rotation = q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))  # Haar-distributed

    def loss_and_codes(rot):
        z = v @ rot
        b = np.where(z >= 0, 1.0, -1.0)
        return float(np.sum((b - z) ** 2)), b

    loss, b = loss_and_codes(rotation)
    losses = [loss]
    for _ in range(int(iterations)):
        u, _s, wt = np.linalg.svd(b.T @ v)
        rotation = wt.T @ u.T
        loss, b = loss_and_codes(rotation)
        losses.append(loss)
    return rotation, np.asarray(losses)


class ITQHashModel(LinearHashModel):
    """Iterative quantisation: PCA to ``bits`` dimensions, then a learned rotation."""

    kind = "itq"
    description = "baseline: PCA + iterative quantisation rotation (Gong & Lazebnik 2011, NumPy)"
    _extra_arrays = ("pca_components", "rotation", "quantization_loss", "explained_variance_ratio")

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),
        bits: int = 30,
        seed: int = 0,
        itq_iterations: int = 50,
    ):
        super().__init__(input_shape=input_shape, bits=bits, seed=seed)
        self.itq_iterations = itq_iterations

    def _learn_projection(self, centred, context):
        if int(self.itq_iterations) < 0:
            raise ModelError(f"itq: itq_iterations must be >= 0, got {self.itq_iterations}")
        components, ratio = _pca(centred, int(self.bits), self.seed, self.kind)
        v = centred @ components.T
        rotation, losses = itq_rotation(v, int(self.itq_iterations), self.seed)
        context.log(
            f"itq: quantisation loss {losses[0]:.1f} -> {losses[-1]:.1f} "
            f"over {int(self.itq_iterations)} iterations"
        )
        self.pca_components_ = components
        self.rotation_ = rotation
        self.quantization_loss_ = losses
        self.explained_variance_ratio_ = ratio
        self.history_ = {"quantization_loss": losses.tolist()}
        return components.T @ rotation

    def summary_metrics(self) -> dict[str, Any]:
        out = super().summary_metrics()
        if hasattr(self, "quantization_loss_") and len(self.quantization_loss_):
            # per image, so that runs on different dataset sizes compare
            n = int(getattr(self, "n_train_images_", 0)) or 1
            out["quantization_loss_start"] = float(self.quantization_loss_[0]) / n
            out["quantization_loss_end"] = float(self.quantization_loss_[-1]) / n
        if hasattr(self, "explained_variance_ratio_"):
            out["explained_variance"] = float(np.sum(self.explained_variance_ratio_))
        return out
