"""File paths <-> the keys an index stores for them.  The one place that knows the scheme.

A POSIX file name is any bytes but ``/`` and NUL; SQLite and PostgreSQL TEXT hold only valid
Unicode.  So the ``images.path`` column holds a *key*: the path's bytes decoded as UTF-8, with

* every byte that is not part of valid UTF-8 written ``\\xNN`` (two lowercase hex digits), and
* every backslash doubled (``\\\\``), so that a file really named ``caf\\xe9.png`` keeps its
  own key.

Every other character is itself, so an ordinary path (UTF-8, no backslash) is its own key,
and the key reads like Python's repr of the name: ``caf\\xe9.png``.  The mapping is one
character (or undecodable byte) at a time and never touches ``/``, so the key of
``folder/name`` is ``key(folder) + "/" + key(name)``: everything under a folder stays one
string-prefix range, which is how the indexer finds a folder's rows.

Keys print as they are (messages, tables, ``--json``); :func:`key_path` or :func:`key_bytes`
turn one back into the exact file name.  Labels (first-level folder names) use the same
scheme.  Anything that stores or reads paths (indexer, search, bulk import, Ray engine, web)
goes through these functions.
"""

from __future__ import annotations

import os
import re

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes 0x80-0xff
_TOKEN = re.compile(r"\\(?:\\|x([0-9a-f]{2}))|\\")  # an escape, or a malformed backslash


def path_key(path: str | bytes | os.PathLike) -> str:
    """Filesystem path (or a single name) -> the text stored for it.  Lossless."""
    text = os.fsencode(path).decode("utf-8", "surrogateescape")
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def key_bytes(key: str) -> bytes:
    """A stored key -> the exact bytes of the path.  ValueError for text no key can be."""
    out = bytearray()
    pos = 0
    for m in _TOKEN.finditer(key):
        out += _literal(key[pos : m.start()], key)
        if m.group(0) == "\\\\":
            out += b"\\"
        elif m.group(1) is not None:
            out.append(int(m.group(1), 16))
        else:
            raise ValueError(f"not a semhash path key (stray backslash at {m.start()}): {key!r}")
        pos = m.end()
    out += _literal(key[pos:], key)
    return bytes(out)


def key_path(key: str) -> str:
    """A stored key -> the path as Python's os functions take it (str, surrogateescape)."""
    return os.fsdecode(key_bytes(key))


def _literal(text: str, key: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"not a semhash path key (lone surrogate): {key!r}") from None


def printable(text: str) -> str:
    """Any message text that may hold raw (surrogate-escaped) path bytes -> printable text,
    undecodable bytes shown ``\\xNN`` as in keys."""
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)
