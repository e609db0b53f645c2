"""The committed lock (constraints.txt) agrees with pyproject.toml, and the README's commands,
.ci/run and the lock's own header install through it (issue 18, item 1).

pyproject.toml keeps loose ranges for people who install semhash as a library; constraints.txt
pins every package, transitive ones included, to the version the suite passed with.  These
tests read files only (nothing is downloaded): refreshing the lock is the one command in its
header and in the README.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
REFRESH = "uv pip compile pyproject.toml --all-extras --universal -o constraints.txt"


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared_requirements() -> list[Requirement]:
    """Every requirement pyproject.toml names: the base ones and every extra's (the extras'
    references to semhash itself left out)."""
    spec = project()
    texts = list(spec["dependencies"])
    for extra in spec.get("optional-dependencies", {}).values():
        texts += extra
    return [req for req in map(Requirement, texts) if canonicalize_name(req.name) != "semhash"]


def locked_versions(text: str, environment: dict | None = None) -> dict[str, str]:
    """``name -> version`` of the lock's pins that apply to ``environment`` (this Python by
    default); a package pinned twice for one environment is an error."""
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one == pin per line
        assert spec.operator == "==", f"constraints.txt line {number}: {line!r} is not an exact pin"
        if req.marker is not None and not req.marker.evaluate(environment):
            continue
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt pins {name} twice for this Python"
        pins[name] = spec.version
    return pins


def test_every_declared_requirement_is_locked_at_a_version_it_allows():
    pins = locked_versions(LOCK.read_text())
    problems = []
    for req in declared_requirements():
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in constraints.txt")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req} does not allow the locked {name}=={pins[name]}")
    assert not problems, f"pyproject.toml and constraints.txt disagree ({'; '.join(problems)}): run `{REFRESH}`"


def test_the_lock_covers_every_supported_python():
    """requires-python's lowest minor version and the newest the lock was resolved for get a
    complete set of pins each (the lock is universal: markers choose per Python)."""
    text = LOCK.read_text()
    lowest = re.fullmatch(r">=\s*3\.(\d+)", project()["requires-python"].strip())
    assert lowest, "requires-python is '>=3.N'"
    declared = {canonicalize_name(r.name) for r in declared_requirements() if r.marker is None}
    for minor in (int(lowest.group(1)), 13):
        env = {"python_version": f"3.{minor}", "python_full_version": f"3.{minor}.0", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
               "platform_python_implementation": "CPython"}
        missing = declared - set(locked_versions(text, env))
        assert not missing, f"constraints.txt has no pin for {sorted(missing)} on Python 3.{minor}: run `{REFRESH}`"


def test_the_lock_says_how_to_refresh_it_and_everything_installs_through_it():
    assert REFRESH in LOCK.read_text().splitlines()[1], "constraints.txt's header names the command that made it"
    readme = (ROOT / "README.md").read_text()
    for command in ('pip install -c constraints.txt -e ".[test]" && pytest', "pip install -c constraints.txt -e . && semhash demo", REFRESH):
        assert command in readme, f"README.md no longer shows `{command}`"
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -c constraints.txt -e ".[test]" && pytest' in ci, ".ci/run runs the README's test command"


def test_this_environment_was_installed_from_the_lock():
    """What the suite runs with is what the lock says (CI installs with -c constraints.txt;
    a pip install without it would pick newer releases and this fails, naming them)."""
    if not (ROOT / ".ci").exists():  # pragma: no cover - an installed copy without the repository
        pytest.skip("not a checkout")
    pins = locked_versions(LOCK.read_text())
    drift = []
    for name, version in sorted(pins.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            drift.append(f"{name} (locked {version}) is not installed")
            continue
        if Version(installed) != Version(version):
            drift.append(f"{name} {installed} installed, {version} locked")
    assert not drift, (
        f"this environment differs from constraints.txt ({'; '.join(drift)}): install with "
        f"`pip install -c constraints.txt -e \".[test]\"` ({sys.executable})"
    )
