"""What a photo's EXIF says about it: when it was taken and with which camera.

Read from the EXIF block the decode already parsed (Pillow's ``getexif()``: JPEG, HEIC
through pillow-heif, AVIF, WebP, PNG, TIFF) or, for a TIFF-based RAW file (DNG, NEF, CR2,
ARW, ...), from the file's own first IFD.  Nothing here decodes pixels.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import NamedTuple

_EXIF_IFD = 0x8769
_MAKE, _MODEL, _DATETIME = 0x010F, 0x0110, 0x0132
_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")


class PhotoFacts(NamedTuple):
    taken_at: float | None  # POSIX seconds of EXIF DateTimeOriginal (else DateTime); None when the file has neither
    camera: str | None  # "Make Model" ("Apple iPhone 12"), None when the file names none


NO_FACTS = PhotoFacts(None, None)


def facts_from_exif(exif) -> PhotoFacts:
    """A Pillow ``Image.Exif`` -> :class:`PhotoFacts`; anything unreadable counts as absent
    (a photo's EXIF is often damaged by editors, and it is never worth refusing the file)."""
    try:
        sub = exif.get_ifd(_EXIF_IFD)
        # DateTimeOriginal in the Exif IFD (where cameras put it), else in IFD0 (some RAW
        # files), else the file's DateTime
        stamp = sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        return PhotoFacts(parse_exif_time(stamp, sub.get(_OFFSET_TIME_ORIGINAL)), camera_name(exif.get(_MAKE), exif.get(_MODEL)))
    except Exception:  # noqa: BLE001 - Pillow raises many kinds on a damaged IFD
        return NO_FACTS


def facts_from_tiff_bytes(data: bytes) -> PhotoFacts:
    """The EXIF facts of a TIFF-structured file (most RAW formats) from its bytes."""
    if not data[:4] in _TIFF_HEADERS:
        return NO_FACTS
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(data)
    except Exception:  # noqa: BLE001
        return NO_FACTS
    return facts_from_exif(exif)


def parse_exif_time(stamp, offset=None) -> float | None:
    """EXIF's "YYYY:MM:DD HH:MM:SS" (+ an OffsetTime "+02:00") -> POSIX seconds.  Without an
    offset the time is read as this machine's local time, as cameras write it."""
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.strptime(stamp.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # "0000:00:00 00:00:00" and other placeholders
    if isinstance(offset, str):
        text = offset.strip().rstrip("\x00")
        try:
            sign = -1 if text.startswith("-") else 1
            hours, minutes = text.lstrip("+-").split(":")
            when = when.replace(tzinfo=timezone(sign * timedelta(hours=int(hours), minutes=int(minutes))))
        except ValueError:
            pass
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def camera_name(make, model) -> str | None:
    """"Make Model", without the make twice ("Canon" + "Canon EOS R5" -> "Canon EOS R5")."""
    make = make.strip().rstrip("\x00").strip() if isinstance(make, str) else ""
    model = model.strip().rstrip("\x00").strip() if isinstance(model, str) else ""
    if make and model.lower().startswith(make.split()[0].lower()):
        make = ""
    name = " ".join(part for part in (make, model) if part)
    return name[:200] or None
