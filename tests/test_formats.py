"""A photo library's formats (issue 23): HEIC (pillow-heif), AVIF (Pillow), RAW (rawpy, a DNG
the test writes with tifffile), videos counted and skipped, and a clear line when a format's
package is missing.  Every file is made here, small."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from index_fixtures import home  # noqa: F401  (the shared workspace with model m1)
from semhash.cli import main
from semhash.data import decode_views

pytest.importorskip("pillow_heif", reason="the [photos] extra (pillow-heif) is not installed")
pytest.importorskip("rawpy", reason="the [photos] extra (rawpy) is not installed")


def scene(width: int = 120, height: int = 90, seed: int = 0) -> np.ndarray:
    """A smooth RGB picture (gradients and a few blocks): survives lossy coding."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    out = np.stack([xx, yy, (xx + yy) / 2], axis=-1)
    for _ in range(4):
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        out[y : y + height // 4, x : x + width // 4] = rng.random(3)
    return (out * 255).astype(np.uint8)


def write_heic(path: Path, pixels: np.ndarray) -> Path:
    from semhash.formats import heif_available

    assert heif_available()
    Image.fromarray(pixels).save(path, quality=90)
    return path


def write_dng(path: Path, pixels: np.ndarray) -> Path:
    """A minimal uncompressed DNG: ``pixels`` sampled through an RGGB Bayer pattern, 12 bits,
    no preview (LibRaw demosaics it)."""
    import tifffile

    rgb = pixels.astype(np.uint16) * 16
    cfa = np.zeros(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = rgb[0::2, 0::2, 0]
    cfa[0::2, 1::2] = rgb[0::2, 1::2, 1]
    cfa[1::2, 0::2] = rgb[1::2, 0::2, 1]
    cfa[1::2, 1::2] = rgb[1::2, 1::2, 2]
    identity = (10000, 10000, 0, 10000, 0, 10000, 0, 10000, 10000, 10000, 0, 10000, 0, 10000, 0, 10000, 10000, 10000)
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "semhash test camera", True),  # UniqueCameraModel
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50717, "I", 1, (4095,), True),  # WhiteLevel
        (50721, "2i", 9, identity, True),  # ColorMatrix1
        (50778, "H", 1, (21,), True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
    ]
    tifffile.imwrite(path, cfa, photometric=32803, extratags=tags, subfiletype=0)
    return path


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """One picture per format, a video and a text file."""
    folder = tmp_path / "library"
    folder.mkdir()
    Image.fromarray(scene(seed=1)).save(folder / "a.png")
    Image.fromarray(scene(seed=2)).save(folder / "b.jpg", quality=92)
    write_heic(folder / "c.heic", scene(seed=3))
    Image.fromarray(scene(seed=4)).save(folder / "d.avif", quality=90)
    Image.fromarray(scene(seed=5)).save(folder / "e.webp", quality=90)
    write_dng(folder / "f.dng", scene(128, 96, seed=6))
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_every_format_is_indexed_and_videos_are_counted(home, library):
    result = CliRunner().invoke(main, ["index", str(library), "--quiet", "--json", "--home", str(home), "--workers", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["added"], data["skipped"], data["videos"], data["other_files"]) == (6, 0, 1, 1)
    # a pool's workers write to the real stderr: run the command itself to see it
    import subprocess
    import sys

    again = subprocess.run([sys.executable, "-m", "semhash", "index", str(library), "--rebuild", "--quiet", "--workers", "2",
                            "--home", str(home)], capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0 and "6 added" in again.stdout, again.stderr
    assert again.stderr == ""  # no warning: rawpy's about forked workers is moot with LibRaw's OpenMP on one thread
    text = CliRunner().invoke(main, ["index", str(library), "--quiet", "--home", str(home)])
    assert "not indexed: 1 other file, 1 video" in text.output


@pytest.mark.parametrize("name, save", [("x.heic", write_heic), ("x.avif", lambda p, a: Image.fromarray(a).save(p, quality=95))])
def test_heic_and_avif_decode_to_the_pictures_pixels(tmp_path, name, save):
    pixels = scene(seed=7)
    save(tmp_path / name, pixels)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    got, want = decode_views(tmp_path / name, (30, 40, 3)), decode_views(tmp_path / "x.png", (30, 40, 3))
    assert (got.width, got.height) == (120, 90)
    assert np.abs(got.array - want.array).mean() < 0.03  # lossy, but the same picture


def test_a_dng_is_demosaiced_at_half_size_and_keeps_the_sensors_size(tmp_path):
    pixels = scene(128, 96, seed=8)
    decoded = decode_views(write_dng(tmp_path / "x.dng", pixels), (24, 32, 3))
    assert (decoded.width, decoded.height) == (128, 96)
    # the demosaiced picture is the scene's (colour calibration aside): it correlates strongly
    want = np.asarray(Image.fromarray(pixels).resize((32, 24), Image.Resampling.LANCZOS), np.float32) / 255
    other = np.asarray(Image.fromarray(scene(128, 96, seed=9)).resize((32, 24), Image.Resampling.LANCZOS), np.float32) / 255
    same = np.corrcoef(decoded.array.mean(axis=-1).ravel(), want.mean(axis=-1).ravel())[0, 1]
    assert same > 0.8 and same > np.corrcoef(decoded.array.mean(axis=-1).ravel(), other.mean(axis=-1).ravel())[0, 1] + 0.2


def test_a_missing_decoder_or_a_broken_raw_file_is_one_line_naming_the_file(home, library, monkeypatch):
    from semhash import formats

    (library / "broken.cr2").write_bytes(b"definitely not a raw file" * 50)
    monkeypatch.setattr(formats, "_heif_registered", False)  # as if pillow-heif were not installed
    result = CliRunner().invoke(main, ["index", str(library), "--quiet", "--json", "--home", str(home), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 2
    assert "c.heic: HEIC/HEIF needs the pillow-heif package: pip install 'semhash[photos]'" in result.stderr
    assert "broken.cr2: not a readable RAW file" in result.stderr and "Traceback" not in result.output


def test_the_web_reader_makes_thumbnails_of_heic_avif_and_raw(home, library):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app
    from semhash.workspace import Workspace

    assert CliRunner().invoke(main, ["index", str(library), "--quiet", "--home", str(home)]).exit_code == 0
    ws = Workspace(home)
    with TestClient(create_app(ws.index_path, ws), base_url="http://127.0.0.1") as client:
        for name in ("c.heic", "d.avif", "f.dng"):
            row = client.get("/api/images", params={"path": str(library.resolve() / name)})
            assert row.status_code == 200, row.text
            thumb = client.get(f"/api/images/{row.json()['id']}/thumbnail?size=64")
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png", name
            with Image.open(__import__("io").BytesIO(thumb.content)) as img:
                assert max(img.size) == 64
            # full size: a browser shows AVIF as it is; HEIC and RAW come as a JPEG of the picture
            full = client.get(f"/api/images/{row.json()['id']}/file")
            assert full.status_code == 200, name
            if name == "d.avif":
                assert full.headers["content-type"] == "image/avif" and full.content == (library / name).read_bytes()
            else:
                assert full.headers["content-type"] == "image/jpeg" and full.headers["etag"] != thumb.headers["etag"], name
                with Image.open(__import__("io").BytesIO(full.content)) as img:
                    assert img.format == "JPEG" and img.size == ((120, 90) if name == "c.heic" else (64, 48)), (name, img.size)


def test_duplicates_can_keep_the_original_format_over_a_larger_jpeg(home, tmp_path):
    folder = tmp_path / "copies"
    folder.mkdir()
    dng = write_dng(folder / "IMG_0001.dng", scene(128, 96, seed=11))
    developed = decode_views(dng, (8, 8, 3))  # what the camera file shows, as a JPEG twice its preview's size
    Image.fromarray(developed.near).resize((256, 192), Image.Resampling.LANCZOS).save(folder / "IMG_0001.jpg", quality=90)
    write_heic(folder / "IMG_0002.heic", scene(seed=13))
    Image.fromarray(scene(seed=13)).resize((240, 180), Image.Resampling.LANCZOS).save(folder / "IMG_0002.jpg", quality=90)
    assert CliRunner().invoke(main, ["index", str(folder), "--quiet", "--home", str(home)]).exit_code == 0

    def keepers(rule: str) -> list[str]:
        result = CliRunner().invoke(main, ["duplicates", "--keep", rule, "--json", "--home", str(home)])
        assert result.exit_code == 0, result.output
        groups = json.loads(result.stdout)["groups"]
        assert len(groups) == 2 and all(len(g["duplicates"]) == 1 for g in groups)
        return sorted(Path(g["keeper"]["path"]).name for g in groups)

    assert keepers("largest") == ["IMG_0001.jpg", "IMG_0002.jpg"]
    assert keepers("original-format") == ["IMG_0001.dng", "IMG_0002.heic"]


def exif_of(make: str, model: str, taken: str, offset: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    if offset is not None:
        exif.get_ifd(0x8769)[0x9011] = offset  # OffsetTimeOriginal
    return exif


def test_capture_time_camera_and_format_are_stored_and_pick_the_keeper(home, tmp_path):
    import os
    import sqlite3
    from datetime import datetime, timedelta, timezone

    folder = tmp_path / "trip"
    folder.mkdir()
    pixels = scene(seed=16)  # PDQ quality 76: a picture with detail enough for the near tier
    # the first shot (a HEIC from the phone), an edited JPEG export of it written later but
    # keeping no EXIF, and a JPEG copy whose EXIF says it was taken later still
    write_heic(folder / "IMG_0100.heic", pixels)
    with Image.open(folder / "IMG_0100.heic") as img:  # the HEIC again, with its EXIF
        img.save(folder / "IMG_0100.heic", exif=exif_of("Apple", "iPhone 12", "2021:06:01 09:30:00", "+02:00"), quality=90)
    Image.fromarray(pixels).resize((240, 180), Image.Resampling.LANCZOS).save(
        folder / "export.jpg", quality=92, exif=exif_of("Canon", "Canon EOS R5", "2022:01:02 03:04:05"))
    Image.fromarray(pixels).save(folder / "screenshot.png")
    os.utime(folder / "IMG_0100.heic", (2e9, 2e9))  # the original's file is the newest on disk
    os.utime(folder / "export.jpg", (1.7e9, 1.7e9))
    os.utime(folder / "screenshot.png", (1.8e9, 1.8e9))
    write_dng(tmp_path / "raw.dng", scene(128, 96, seed=22))
    assert CliRunner().invoke(main, ["index", str(folder), "--quiet", "--home", str(home)]).exit_code == 0

    con = sqlite3.connect(home / "index" / "index.sqlite")
    stored = {Path(p).name: rest for p, *rest in con.execute("SELECT path, format, camera, taken_at, width, height FROM images")}
    con.close()
    first = datetime(2021, 6, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))).timestamp()
    assert stored["IMG_0100.heic"] == ["HEIF", "Apple iPhone 12", first, 120, 90]
    assert stored["export.jpg"] == ["JPEG", "Canon EOS R5", datetime(2022, 1, 2, 3, 4, 5).timestamp(), 240, 180]
    assert stored["screenshot.png"] == ["PNG", None, None, 120, 90]

    def group(rule: str) -> dict:
        result = CliRunner().invoke(main, ["duplicates", "--keep", rule, "--json", "--home", str(home)])
        assert result.exit_code == 0, result.output
        (only,) = json.loads(result.stdout)["groups"]
        return only

    # oldest capture: the HEIC (EXIF 2021) over the JPEG (EXIF 2022) and the PNG (no EXIF: its mtime, 2027)
    found = group("oldest-capture")
    assert Path(found["keeper"]["path"]).name == "IMG_0100.heic"
    assert (found["keeper"]["taken_at"], found["keeper"]["camera"], found["keeper"]["format"]) == (first, "Apple iPhone 12", "HEIF")
    assert Path(group("oldest")["keeper"]["path"]).name == "export.jpg"  # by file time, the export is oldest
    table = CliRunner().invoke(main, ["duplicates", "--keep", "oldest-capture", "--home", str(home)]).stdout
    assert "taken (UTC)" in table and "2021-06-01 07:30" in table and "HEIF" in table
    # the page's API: the same facts, the same keeper
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app
    from semhash.workspace import Workspace

    ws = Workspace(home)
    with TestClient(create_app(ws.index_path, ws), base_url="http://127.0.0.1") as client:
        groups = client.get("/api/duplicates", params={"keep": "oldest-capture"})
        assert groups.status_code == 200, groups.text
        keeper = groups.json()["groups"][0]["keeper"]
        assert (Path(keeper["path"]).name, keeper["taken_at"], keeper["camera"], keeper["format"]) == ("IMG_0100.heic", first, "Apple iPhone 12", "HEIF")


def test_a_raw_files_camera_and_time_come_from_its_own_tags(tmp_path):
    import tifffile

    path = write_dng(tmp_path / "x.dng", scene(64, 48, seed=23))
    # tifffile cannot add tags to a written file: write it again with Make, Model and DateTime
    data = tifffile.imread(path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        extra = [(t.code, t.dtype, t.count, t.value, True) for t in page.tags.values()
                 if t.code >= 33421 and t.code not in (33432,)]  # fmt: skip
    tifffile.imwrite(path, data, photometric=32803, subfiletype=0, datetime="2020:02:03 04:05:06",
                     extratags=[*extra, (271, "s", 0, "Nikon", True), (272, "s", 0, "NIKON Z 6", True)])  # fmt: skip
    decoded = decode_views(path, (8, 8, 3))
    assert (decoded.format, decoded.camera) == ("DNG", "NIKON Z 6")
    from datetime import datetime

    assert decoded.taken_at == datetime(2020, 2, 3, 4, 5, 6).timestamp()


def test_large_png_and_webp_decode_through_libvips_as_through_pillow(tmp_path, monkeypatch):
    pytest.importorskip("pyvips", reason="the [photos] extra (pyvips) is not installed")
    from semhash import formats
    from semhash.errors import ImageError

    assert formats.vips() is not None
    big = np.asarray(Image.fromarray(scene(seed=24)).resize((1280, 960), Image.Resampling.BICUBIC))
    alpha = np.full(big.shape[:2], 255, np.uint8)
    alpha[:, :200] = 0  # transparent on the left: composited on black either way
    files = {
        "rgb.png": lambda p: Image.fromarray(big).save(p),
        "rgba.png": lambda p: Image.fromarray(np.dstack([big, alpha]), "RGBA").save(p),
        "grey16.png": lambda p: Image.fromarray(big[..., 0].astype(np.uint16) * 257).save(p),
        "photo.webp": lambda p: Image.fromarray(big).save(p, quality=92),
    }
    for name, write in files.items():
        write(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        with Image.open(tmp_path / name) as img:
            assert formats.vips_reduced(data, img.size, 256) is not None, name  # the libvips path is taken
        channels = 1 if "grey" in name else 3
        by_vips = decode_views(tmp_path / name, (24, 32, channels), data=data)
        monkeypatch.setattr(formats, "_vips", False)  # as without pyvips
        by_pillow = decode_views(tmp_path / name, (24, 32, channels), data=data)
        monkeypatch.setattr(formats, "_vips", None)
        assert (by_vips.width, by_vips.height, by_vips.format) == (by_pillow.width, by_pillow.height, by_pillow.format) == (1280, 960, by_pillow.format)
        assert np.abs(by_vips.array - by_pillow.array).max() < 0.05, name  # the same pixels, within resampling
        assert np.abs(by_vips.near.astype(int) - by_pillow.near).mean() < 2, name
    truncated = tmp_path / "cut.png"
    whole = (tmp_path / "rgb.png").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError, match="cut.png: corrupt or truncated image"):  # libvips refuses it, Pillow words it
        decode_views(truncated, (24, 32, 3), data=truncated.read_bytes())
