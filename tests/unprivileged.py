"""What root can and cannot do for the tests.  Running semhash without root's permission
bypass: as root, chmod 000 denies nothing, so tests of unreadable and read-only files run
their commands under setpriv with CAP_DAC_OVERRIDE dropped.  A real full disk: a small tmpfs,
which only root may mount.  Each skips, saying why, where it cannot be done."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@functools.lru_cache(maxsize=None)
def _unprivileged_prefix() -> tuple[str, ...] | str:
    """A command prefix under which chmod 000 really denies access, or why there is none."""
    if not IS_ROOT:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "running as root and setpriv is not installed"
    prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"semhash-setpriv-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    probe.chmod(0)
    try:
        denied = subprocess.run([*prefix, "ls", str(probe)], capture_output=True).returncode != 0
    finally:
        probe.chmod(0o700)
        probe.rmdir()
    return prefix if denied else "running as root and setpriv cannot drop CAP_DAC_OVERRIDE here"


def unprivileged() -> list[str]:
    prefix = _unprivileged_prefix()
    if isinstance(prefix, str):
        pytest.skip(f"{prefix}: permission denials cannot be tested")
    return list(prefix)


CHILD_CLI = """
import json, sys
from click.testing import CliRunner
from semhash.cli import main
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(main, args)
    out.append({"exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                "exception": None if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception)})
print(json.dumps(out))
"""


def cli_unprivileged(*invocations: list) -> list[dict]:
    """Run CLI invocations in one child process without root's permission bypass."""
    argv = json.dumps([[str(a) for a in args] for args in invocations])
    done = subprocess.run(
        [*unprivileged(), sys.executable, "-c", CHILD_CLI, argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (``"160k"``) mounted on the new folder ``folder``: a disk that
    fills up for real.  Unmounted at the end."""
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
