import numpy as np
from hypothesis import given, strategies as st

from semhash.hashing import (
    bits_to_codes,
    code_to_str,
    codes_to_bits,
    from_signed64,
    hamming,
    hamming_matrix,
    neighbour_codes,
    to_signed64,
)


@given(st.integers(1, 64), st.data())
def test_bits_codes_round_trip(n_bits, data):
    bits = np.array(data.draw(st.lists(st.lists(st.integers(0, 1), min_size=n_bits, max_size=n_bits), min_size=1, max_size=5)))
    codes = bits_to_codes(bits)
    assert codes.dtype == np.uint64
    np.testing.assert_array_equal(codes_to_bits(codes, n_bits), bits)


def test_bit_order_is_little_endian():
    assert int(bits_to_codes(np.array([[1, 0, 0]]))[0]) == 1
    assert int(bits_to_codes(np.array([[0, 0, 1]]))[0]) == 4
    assert code_to_str(4, 3) == "001"


@given(st.integers(0, 2**64 - 1))
def test_signed_round_trip(code):
    signed = to_signed64(code)
    assert -(2**63) <= signed < 2**63
    assert from_signed64(signed) == code


def test_neighbour_codes_count_and_order():
    found = list(neighbour_codes(0b1011, 30, 2))
    assert len(found) == 1 + 30 + 435 == 466
    assert len({c for c, _ in found}) == 466
    distances = [d for _, d in found]
    assert distances == sorted(distances)
    for code, d in found:
        assert int(hamming(code, 0b1011)) == d


def test_hamming_matrix_top_bit():
    a = np.array([2**63, 0], dtype=np.uint64)
    b = np.array([0, 2**64 - 1], dtype=np.uint64)
    np.testing.assert_array_equal(hamming_matrix(a, b), [[1, 63], [0, 64]])
