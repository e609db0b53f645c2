"""Bits <-> integer codes and Hamming-space helpers (pure NumPy).

A code packs ``n_bits <= 64`` bits into one unsigned 64-bit integer, bit ``i`` of the code
being output unit ``i`` (little-endian: unit 0 is the least significant bit).
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterator

import numpy as np

MAX_BITS = 64


def check_bits(n_bits: int) -> int:
    if not 1 <= int(n_bits) <= MAX_BITS:
        raise ValueError(f"bits must be between 1 and {MAX_BITS}, got {n_bits}")
    return int(n_bits)


def bits_to_codes(bits: np.ndarray) -> np.ndarray:
    """(N, B) array of 0/1 -> (N,) uint64 codes."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"bits must be 2-D (N, B), got shape {bits.shape}")
    check_bits(bits.shape[1])
    weights = np.left_shift(np.uint64(1), np.arange(bits.shape[1], dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def codes_to_bits(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """(N,) integer codes -> (N, B) uint8 array of 0/1."""
    codes = np.asarray(codes, dtype=np.uint64).reshape(-1)
    shifts = np.arange(check_bits(n_bits), dtype=np.uint64)
    return ((codes[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise (broadcasting) Hamming distance between uint64 codes."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)


def hamming_matrix(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """(Q,) x (N,) codes -> (Q, N) int distances."""
    q = np.asarray(queries, dtype=np.uint64).reshape(-1, 1)
    d = np.asarray(database, dtype=np.uint64).reshape(1, -1)
    return np.bitwise_count(np.bitwise_xor(q, d)).astype(np.int16)


def neighbour_codes(code: int, n_bits: int, radius: int) -> Iterator[tuple[int, int]]:
    """Yield ``(neighbour_code, distance)`` for every code within ``radius`` of ``code``,
    nearest first.  For 30 bits and radius 2 that is 1 + 30 + 435 = 466 codes."""
    check_bits(n_bits)
    if radius < 0:
        raise ValueError("radius must be >= 0")
    code = int(code)
    for distance in range(0, min(radius, n_bits) + 1):
        for positions in combinations(range(n_bits), distance):
            flipped = code
            for p in positions:
                flipped ^= 1 << p
            yield flipped, distance


def to_signed64(code: int) -> int:
    """Unsigned 64-bit code -> the signed integer SQLite stores (two's complement)."""
    code = int(code)
    return code - (1 << 64) if code >= (1 << 63) else code


def from_signed64(value: int) -> int:
    value = int(value)
    return value + (1 << 64) if value < 0 else value


def code_to_str(code: int, n_bits: int) -> str:
    """Human form: the bits, unit 0 first (matches the model's output order)."""
    return format(int(code) & ((1 << n_bits) - 1), f"0{n_bits}b")[::-1]  # 20x the per-bit join
