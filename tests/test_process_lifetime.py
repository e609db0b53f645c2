"""No orphans (issue 18, item 3): the processes a `semhash index` run starts end when it dies,
however it dies.  Each test starts a real `semhash index` process, waits until its helper
processes are running, kills it with SIGKILL (what the out-of-memory killer sends) and asserts
that none of its helpers is alive 5 seconds later."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_fixtures import add_model, write_digit_folder  # noqa: E402
from postgres_server import skip_or_fail  # noqa: E402
from waiting import wait_for  # noqa: E402

from semhash import lifetime  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")

GRACE_S = 5.0


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` in the process tree (zombies count as dead)."""
    return lifetime.descendants(lifetime.process_table(), root)


def alive(pid: int) -> bool:
    return pid in lifetime.process_table()


def command_line(pid: int) -> str:
    entry = lifetime.process_table().get(pid)
    return entry[2].strip() if entry else "(gone)"


def start_indexer(tmp_path: Path, *extra: str, images: int = 3000) -> subprocess.Popen:
    home = tmp_path / "home"
    add_model(home, "m1")
    per_class = images // 10
    write_digit_folder(tmp_path / "imgs", per_class=per_class, classes=tuple(range(10)))
    argv = [sys.executable, "-m", "semhash", "index", str(tmp_path / "imgs"), "--batch-size", "1", "--quiet", *extra]
    env = {**os.environ, "SEMHASH_HOME": str(home)}
    # output to a file, not a pipe: a surviving helper would hold a pipe open for ever
    with open(tmp_path / "stderr.txt", "wb") as log:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)


@contextlib.contextmanager
def ended_afterwards(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """The process, killed at the end of the block if the test left it running."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_and_check_helpers_end(proc: subprocess.Popen, helpers: set[int]) -> None:
    assert proc.poll() is None, f"the indexer finished (exit code {proc.returncode}) before it could be killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    try:
        wait_for(lambda: not any(alive(pid) for pid in helpers), "the helpers to end", timeout_s=GRACE_S)
    except AssertionError:
        survivors = {pid: command_line(pid) for pid in helpers if alive(pid)}
        for pid in survivors:  # leave nothing behind for the next test
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"{len(survivors)} helper(s) outlived the killed process by {GRACE_S:.0f} s: {survivors}") from None


def test_pool_workers_end_when_the_indexer_is_killed(tmp_path):
    proc = start_indexer(tmp_path, "--workers", "2")
    with ended_afterwards(proc):
        workers = wait_for(lambda: len(descendants(proc.pid)) >= 2 and descendants(proc.pid), "the 2 pool workers to start")
        kill_and_check_helpers_end(proc, workers)


def test_a_local_rays_processes_end_when_the_indexer_is_killed(tmp_path):
    """`--engine ray` without --address starts a local Ray: its raylet and GCS, agents and
    hashing workers all end with the killed driver (the agents alone would linger a minute)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        skip_or_fail("ray is not installed (pip install -e '.[distributed]')")
    proc = start_indexer(tmp_path, "--engine", "ray", "--workers", "1", images=2000)
    with ended_afterwards(proc):

        def ray_workers_running() -> set[int] | None:
            helpers = descendants(proc.pid)
            commands = [command_line(pid) for pid in helpers]
            hashing = any(c.startswith("ray::") and "Agent" not in c for c in commands)
            agents = sum(c.startswith("ray::") and "Agent" in c for c in commands)
            return helpers if hashing and agents >= 2 else None

        helpers = wait_for(ray_workers_running, "a local Ray's hashing workers and agents to start", timeout_s=180)
        kill_and_check_helpers_end(proc, helpers)


def test_server_workers_end_when_semhash_serve_is_killed(tmp_path):
    """`semhash serve --workers 2` runs two server processes under a supervisor: killing the
    supervisor takes them down too (they would otherwise keep the port and the index open)."""
    import httpx

    from semhash.index import index_folder
    from semhash.web.local_server import free_port
    from semhash.workspace import Workspace

    home = tmp_path / "home"
    add_model(home, "m1")
    write_digit_folder(tmp_path / "imgs", per_class=2, classes=(0, 1))
    index_folder(tmp_path / "imgs", Workspace(home).model("m1"), Workspace(home).index_path, progress=False)
    port = free_port()
    argv = [sys.executable, "-m", "semhash", "serve", "--workers", "2", "--port", str(port), "--quiet", "--home", str(home)]
    with open(tmp_path / "stderr.txt", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    with ended_afterwards(proc):

        def serving() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(serving, "semhash serve to answer")
        workers = wait_for(lambda: len(descendants(proc.pid)) >= 2 and descendants(proc.pid), "both server workers")
        kill_and_check_helpers_end(proc, workers)


def test_sigterm_stops_a_ray_run_like_ctrl_c_without_stack_lines(tmp_path):
    """Ray's core worker answers SIGTERM with C++ stack lines and an abrupt exit: semhash keeps
    its own handler, so the run stops as Ctrl-C stops it (exit 143, Ray shut down, what was
    committed kept) and prints no stack."""
    try:
        import ray  # noqa: F401
    except ImportError:
        skip_or_fail("ray is not installed (pip install -e '.[distributed]')")
    proc = start_indexer(tmp_path, "--engine", "ray", "--workers", "1", images=2000)
    with ended_afterwards(proc):
        wait_for(lambda: any(command_line(p).startswith("ray::") and "Agent" not in command_line(p)
                             for p in descendants(proc.pid)), "a local Ray's hashing workers", timeout_s=180)  # fmt: skip
        helpers = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert "SIGTERM received" not in stderr and "Traceback" not in stderr, stderr[-2000:]
    wait_for(lambda: not any(alive(pid) for pid in helpers), "Ray's processes to end", timeout_s=GRACE_S)
