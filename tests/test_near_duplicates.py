"""The near-duplicate rate: hand-made codes for the metric, a real hasher for the copies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semhash.metrics import within_radius_rate


def test_within_radius_rate_hand_example():
    codes = np.array([0b0000, 0b1111, 0b1010, 0b0001], dtype=np.uint64)
    copies = np.array([0b0000, 0b1110, 0b0101, 0b0111], dtype=np.uint64)  # distances 0, 1, 4, 2
    assert within_radius_rate(codes, copies, 0) == 0.25
    assert within_radius_rate(codes, copies, 1) == 0.5
    assert within_radius_rate(codes, copies, 2) == 0.75
    assert within_radius_rate(codes, copies, 4) == 1.0
    assert math.isnan(within_radius_rate(codes[:0], copies[:0], 2))
    with pytest.raises(ValueError):
        within_radius_rate(codes, copies[:2], 2)


def test_near_duplicate_rates_of_a_real_hasher(digits):
    from semhash.models.baselines import ITQHashModel
    from semhash.near_duplicates import TRANSFORMS, near_duplicate_rates

    hasher = ITQHashModel(input_shape=digits.image_shape, bits=8, seed=0).fit(digits.images).export_hasher()
    result = near_duplicate_rates(hasher, digits.images, radius=2, sample=60, seed=0)
    assert result["n_images"] == 60 and set(result["transforms"]) == set(TRANSFORMS) == {"jpeg", "resize_up", "resize_down", "shift", "brightness", "resize_bright_jpeg"}
    for name, row in result["transforms"].items():
        assert 0 <= row["rate"] <= 1 and row["mean_distance"] >= 0 and row["description"]
    assert result["min_rate"] == min(result["transforms"][name]["rate"] for name in ("jpeg", "resize_up", "resize_down", "shift"))
    # radius 8 = every code of 8 bits: every copy comes back
    assert near_duplicate_rates(hasher, digits.images, radius=8, sample=20)["min_rate"] == 1.0


def test_the_copies_are_the_stated_transformations():
    from PIL import Image

    from semhash.near_duplicates import TRANSFORMS

    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[2, 3] = 200
    img = Image.fromarray(pixels)
    shifted, suffix, _ = TRANSFORMS["shift"][1](img)
    assert suffix == ".png" and np.asarray(shifted)[3, 4] == 200 and np.asarray(shifted).sum() == 200
    assert TRANSFORMS["resize_up"][1](img)[0].size == (16, 16)
    assert TRANSFORMS["resize_down"][1](img)[0].size == (6, 6)
    assert TRANSFORMS["jpeg"][1](img)[1:] == (".jpg", {"quality": 75})
    # brightness: one factor in [0.92, 1.1], the same every time for the same pixels
    brighter, suffix, _ = TRANSFORMS["brightness"][1](img)
    value = np.asarray(brighter)[2, 3]
    assert suffix == ".png" and 184 <= value <= 220 and np.asarray(TRANSFORMS["brightness"][1](img)[0])[2, 3] == value
    copy, suffix, options = TRANSFORMS["resize_bright_jpeg"][1](img)
    assert copy.size == (16, 16) and (suffix, options) == (".jpg", {"quality": 75})
