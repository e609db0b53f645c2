"""`semhash serve` as a subprocess on 127.0.0.1 (for the browser test, the load benchmark and
the README screenshot), and the flags headless Chromium needs here.

The server is always stopped on leaving the ``with`` block: SIGTERM, then SIGKILL if it has
not exited within a few seconds.  Waiting for it to come up is bounded in time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

#: Chromium without a sandbox (we run as root), GPU or any call home at start-up
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")


def find_chromium() -> str | None:
    """Debian's Chromium, where it is installed."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``with LocalServer(index, home) as server: server.url`` -- a real ``semhash serve``."""

    def __init__(
        self,
        index_path: str | Path,
        home: str | Path,
        *,
        workers: int = 1,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 60.0,
        log_path: str | Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.index_path = str(index_path)  # a file, or a database URL (a Path would fold its //)
        self.home = Path(home)
        self.workers = workers
        self.extra_args = list(extra_args)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.env = env
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalServer":
        self.port = free_port()
        command = [
            sys.executable, "-m", "semhash", "serve",
            "--index", self.index_path, "--home", str(self.home),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers), "--quiet",
            *self.extra_args,
        ]
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if log is not subprocess.DEVNULL:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"semhash serve exited with code {self.process.returncode} before answering{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/api/status", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"semhash serve did not answer within {self.startup_timeout_s:.0f} s{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.exists():
            return ":\n" + self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # uvicorn shuts down gracefully on SIGTERM (and its workers with it)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:  # its own process group (start_new_session): the server and its workers
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                process.kill()
            process.wait(timeout=10)

    def __exit__(self, *exc) -> None:
        self.stop()
