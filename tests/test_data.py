import numpy as np
import pytest

from semhash.data import (
    decode_image,
    export_dataset,
    iter_image_files,
    load_builtin,
    load_folder,
    stratified_split,
)
from semhash.errors import DatasetError, ImageError


def test_mnist5k_split_is_fixed_and_stratified():
    d = load_builtin("mnist-5k")
    assert d.images.shape == (5000, 28, 28, 1) and d.images.dtype == np.float32
    assert 0.0 <= d.images.min() and d.images.max() <= 1.0
    assert len(d.database_index) == 4000 and len(d.query_index) == 1000
    assert not set(d.database_index) & set(d.query_index)
    assert np.bincount(d.labels[d.query_index]).tolist() == [100] * 10
    again = load_builtin("mnist-5k")
    np.testing.assert_array_equal(d.query_index, again.query_index)


def test_digits_shape(digits):
    assert digits.images.shape == (1797, 8, 8, 1)
    assert len(digits.query_index) + len(digits.database_index) == 1797


def test_idx_dataset_missing_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMHASH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="nowhere"):
        load_builtin("mnist", data_dir=tmp_path / "also-nowhere")


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_builtin("cifar-1000")


def test_stratified_split_seeded():
    labels = np.repeat(np.arange(4), 25)
    a = stratified_split(labels, 100, 0.2)
    b = stratified_split(labels, 100, 0.2)
    np.testing.assert_array_equal(a[1], b[1])
    assert np.bincount(labels[a[1]]).tolist() == [5, 5, 5, 5]


@pytest.mark.parametrize("name", ["corrupt", "text", "empty"])
def test_bad_files_raise_one_line_error_naming_the_file(odd_files, name):
    with pytest.raises(ImageError) as info:
        decode_image(odd_files[name], (8, 8, 1))
    message = str(info.value)
    assert str(odd_files[name]) in message and "\n" not in message


@pytest.mark.parametrize("name", ["rgba", "deep16", "exif", "large", "unicode", "gif", "webp", "bmp", "tiff"])
def test_unusual_valid_images_decode(odd_files, name):
    for shape in [(8, 8, 1), (12, 12, 3)]:
        arr = decode_image(odd_files[name], shape)
        assert arr.shape == shape and arr.dtype == np.float32
        assert 0.0 <= arr.min() and arr.max() <= 1.0


def test_exif_orientation_applied(odd_files):
    # stored 20 wide x 10 high with a white stripe on the left; orientation 6 rotates it
    # 90 degrees clockwise for display, so the stripe ends up along the top
    arr = decode_image(odd_files["exif"], (20, 10, 1))[..., 0]  # (H=20, W=10)
    assert arr[:4].mean() > 0.8 and arr[-4:].mean() < 0.2


def test_sixteen_bit_png_keeps_its_range(odd_files):
    arr = decode_image(odd_files["deep16"], (8, 8, 1))[..., 0]
    assert arr[0, 0] < 0.05 and arr[-1, -1] > 0.95


def test_rgba_alpha_composited_on_black(odd_files):
    arr = decode_image(odd_files["rgba"], (16, 16, 3))
    assert arr[0, 0].max() < 0.05  # transparent corner -> black
    assert arr[8, 8, 0] > 0.95  # opaque red centre


def test_folder_labels_from_first_level(tmp_path, digits, png_writer):
    write_png = png_writer
    write_png(tmp_path / "a" / "deep" / "x.png", digits.images[0])
    write_png(tmp_path / "b" / "y.png", digits.images[1])
    write_png(tmp_path / "root.png", digits.images[2])
    found = {p.name: label for p, label in iter_image_files(tmp_path)}
    assert found == {"x.png": "a", "y.png": "b", "root.png": None}


def test_load_folder_skips_bad_files(odd_files):
    skipped = []
    d = load_folder(odd_files["rgba"].parent, (8, 8, 1), on_skip=skipped.append)
    assert len(skipped) == 3
    assert d.labels is None  # images directly in the root have no label
    assert len(d.images) == 9


def test_missing_folder():
    with pytest.raises(DatasetError, match="no such folder"):
        load_folder("/definitely/not/here")


def test_export_dataset_round_trip(tmp_path, digits):
    paths = export_dataset("digits", tmp_path, part="query")
    assert len(paths) == len(digits.query_index)
    d = load_folder(tmp_path, (8, 8, 1))
    assert sorted(d.class_names) == [str(i) for i in range(10)]
    # 8-bit PNG quantisation only
    first = digits.images[digits.query_index[0]]
    assert np.abs(decode_image(paths[0], (8, 8, 1)) - first).max() <= 1 / 255 + 1e-6
