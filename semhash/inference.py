"""TensorFlow-free forward pass: images -> codings -> bits -> integer codes.

Every model kind exports itself (``semhash.export`` for Keras models, directly for the
NumPy baselines) to a :class:`Hasher`: a short list of plain operations with their weights,
saved as one ``.npz`` file.  Indexing and querying load a Hasher and never import TensorFlow.

Ops (each a dict in ``spec["ops"]``; array parameters live in the npz as ``op{i}.{name}``):

* ``flatten``
* ``dense``       kernel (in, out), bias (out,)
* ``conv2d``      kernel (kh, kw, cin, cout), bias (cout,), strides [sh, sw], padding same|valid
* ``maxpool2d``   pool [ph, pw], strides [sh, sw], padding same|valid
* ``globalavgpool`` mean over height and width: (N, H, W, C) -> (N, C)
* ``batchnorm``   gamma, beta, mean, variance (C,), epsilon
* ``activation``  fn: linear relu sigmoid tanh elu selu gelu leaky_relu softplus

The last op's output is the coding pre-activation, shape (N, n_bits); a bit is 1 where it is
strictly above ``threshold`` (a per-bit array; 0 for a sigmoid coding layer, so that
bit = round(sigmoid(pre-activation)) with round-half-to-even, exactly as Keras rounds).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from semhash.hashing import bits_to_codes, check_bits

FORMAT_VERSION = 1
_BATCH = 2048


def _activation(x: np.ndarray, fn: str, alpha: float = 0.2) -> np.ndarray:
    if fn in ("linear", None):
        return x
    if fn == "relu":
        return np.maximum(x, 0)
    if fn == "sigmoid":
        # split form avoids overflow warnings for large |x|
        out = np.empty_like(x)
        pos = x >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
        ex = np.exp(x[~pos])
        out[~pos] = ex / (1.0 + ex)
        return out
    if fn == "tanh":
        return np.tanh(x)
    if fn == "elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
    if fn == "selu":
        a, s = 1.6732632423543772, 1.0507009873554805
        return s * np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))
    if fn == "softplus":
        return np.logaddexp(0, x)
    if fn == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if fn == "gelu":
        from math import sqrt

        from scipy.special import erf

        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)))
    raise ValueError(f"unknown activation {fn!r}")


def _pad_same(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """Pad NHWC input the way TensorFlow's 'same' padding does (extra on bottom/right)."""
    h, w = x.shape[1], x.shape[2]
    out_h, out_w = -(-h // sh), -(-w // sw)
    pad_h = max((out_h - 1) * sh + kh - h, 0)
    pad_w = max((out_w - 1) * sw + kw - w, 0)
    top, left = pad_h // 2, pad_w // 2
    return np.pad(x, ((0, 0), (top, pad_h - top), (left, pad_w - left), (0, 0)))


def _conv2d(x, kernel, bias, strides, padding):
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    if padding == "same":
        x = _pad_same(x, kh, kw, sh, sw)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    windows = windows[:, ::sh, ::sw]  # (N, OH, OW, Cin, kh, kw), a strided view
    n, oh, ow, cin = windows.shape[:4]
    flat_kernel = kernel.reshape(kh * kw * cin, -1)
    # im2col in slices of images: a contiguous (rows, kh*kw*Cin) matrix of at most ~32 MB,
    # then one BLAS matmul per slice (einsum over the strided view is slower and a whole
    # batch's matrix would take gigabytes)
    step = max(1, (8 << 20) // (oh * ow * kh * kw * cin))
    out = np.empty((n, oh, ow, flat_kernel.shape[1]), dtype=np.result_type(x, kernel))
    for s in range(0, n, step):
        part = windows[s : s + step].transpose(0, 1, 2, 4, 5, 3)
        columns = np.ascontiguousarray(part).reshape(-1, kh * kw * cin)
        out[s : s + step] = (columns @ flat_kernel).reshape(-1, oh, ow, flat_kernel.shape[1])
    return out + bias


def _maxpool2d(x, pool, strides, padding):
    ph, pw = pool
    sh, sw = strides
    if padding == "same":
        h, w = x.shape[1], x.shape[2]
        out_h, out_w = -(-h // sh), -(-w // sw)
        pad_h = max((out_h - 1) * sh + ph - h, 0)
        pad_w = max((out_w - 1) * sw + pw - w, 0)
        top, left = pad_h // 2, pad_w // 2
        x = np.pad(
            x, ((0, 0), (top, pad_h - top), (left, pad_w - left), (0, 0)), constant_values=-np.inf
        )
    windows = np.lib.stride_tricks.sliding_window_view(x, (ph, pw), axis=(1, 2))
    return windows[:, ::sh, ::sw].max(axis=(-2, -1))


class Hasher:
    """A model's encoder as NumPy operations.  ``hash(images)`` -> uint64 codes."""

    def __init__(
        self,
        ops: list[dict[str, Any]],
        params: dict[str, np.ndarray],
        n_bits: int,
        input_shape: tuple[int, int, int],
        threshold: np.ndarray | float = 0.0,
        info: dict[str, Any] | None = None,
    ):
        self.ops = ops
        self.params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        self.n_bits = check_bits(n_bits)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float32), (n_bits,)).copy()
        self.info = dict(info or {})

    # -- forward pass -------------------------------------------------------------------
    def _forward(self, x: np.ndarray) -> np.ndarray:
        for i, op in enumerate(self.ops):
            p = lambda name: self.params[f"op{i}.{name}"]  # noqa: E731
            kind = op["op"]
            if kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "dense":
                x = x @ p("kernel") + p("bias")
            elif kind == "conv2d":
                x = _conv2d(x, p("kernel"), p("bias"), op["strides"], op["padding"])
            elif kind == "maxpool2d":
                x = _maxpool2d(x, op["pool"], op["strides"], op["padding"])
            elif kind == "globalavgpool":
                x = x.mean(axis=(1, 2))
            elif kind == "batchnorm":
                x = (x - p("mean")) / np.sqrt(p("variance") + op["epsilon"]) * p("gamma") + p("beta")
            elif kind == "activation":
                x = _activation(x, op["fn"], op.get("alpha", 0.2))
            else:
                raise ValueError(f"unknown op {kind!r}")
        return x

    def transform(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, C) float images in [0, 1] -> (N, n_bits) coding pre-activations."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3 and self.input_shape[-1] == 1:
            images = images[..., None]
        if images.shape[1:] != self.input_shape:
            raise ValueError(f"images have shape {images.shape[1:]}, the model wants {self.input_shape}")
        if len(images) == 0:
            return np.zeros((0, self.n_bits), dtype=np.float32)
        out = [self._forward(images[s : s + _BATCH]) for s in range(0, len(images), _BATCH)]
        result = np.concatenate(out).astype(np.float32)
        if result.shape[1] != self.n_bits:
            raise ValueError(f"the encoder produced {result.shape[1]} outputs for {self.n_bits} bits")
        return result

    def hash_bits(self, images: np.ndarray) -> np.ndarray:
        return (self.transform(images) > self.threshold).astype(np.uint8)

    def hash(self, images: np.ndarray) -> np.ndarray:
        return bits_to_codes(self.hash_bits(images))

    # -- persistence --------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "n_bits": self.n_bits,
            "input_shape": list(self.input_shape),
            "ops": self.ops,
            "info": self.info,
        }

    @property
    def fingerprint(self) -> str:
        """sha256 over the spec and every weight: binds an index to the exact encoder."""
        h = hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode())
        for key in sorted(self.params):
            h.update(key.encode())
            h.update(np.ascontiguousarray(self.params[key]).tobytes())
        h.update(self.threshold.tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = dict(self.params)
        arrays["threshold"] = self.threshold
        arrays["spec"] = np.array(json.dumps(self.spec()))
        with open(path, "wb") as fh:  # np.savez would append .npz to a str path
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Hasher":
        with np.load(Path(path), allow_pickle=False) as data:
            spec = json.loads(str(data["spec"]))
            if spec.get("format") != FORMAT_VERSION:
                raise ValueError(f"{path}: hasher format {spec.get('format')} is not supported")
            params = {k: data[k] for k in data.files if k not in ("spec", "threshold")}
            threshold = data["threshold"]
        return cls(spec["ops"], params, spec["n_bits"], tuple(spec["input_shape"]), threshold, spec.get("info"))
