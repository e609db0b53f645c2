"""Helper processes end when the process that started them ends, however it ends.

A pool worker is normally told to stop by its parent; a parent killed with SIGKILL (or by the
out-of-memory killer) tells nobody, and its helpers would live on as orphans holding memory.

* :func:`die_with_parent`, called first thing in a helper we start ourselves (the indexer's
  pool workers): on Linux the kernel sends the helper SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread notices within a second.
* :class:`Reaper`, for helpers a library starts for us (a local Ray: its raylet and GCS share
  the driver's fate, but its dashboard and runtime-env agents outlive a killed driver by a
  minute, waiting on the dead GCS).  A small watcher process notes the driver's helpers as they
  appear; when the driver dies without saying goodbye it kills those still alive.

How a semhash process itself ends, the other half of the same job:

* :func:`terminate_as_interrupt`: SIGTERM ends a command the way Ctrl-C does (cleanups run);
  :func:`interruptible` lets either signal stop a long SQLite statement within a moment, and
  :func:`signals_deferred` keeps a cleanup from being cut short;
* :func:`remove_abandoned`: the temporary files and folders of a process that was killed
  anyway (SIGKILL, a crash) are removed by the next process that looks, once it is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.5
_GOODBYE = b"bye\n"


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` (the process that started it) ends.  Called
    in the child; if the parent is already gone, the child exits at once."""
    if not _kernel_kills_on_parent_death():
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="semhash-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _kernel_kills_on_parent_death() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills this process when the thread
    that forked it exits.  The indexer's pool is started and stopped by one thread, the
    caller of ``index_folder``, so that is the moment its parent ends."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return False


def _watch_parent(parent_pid: int) -> None:  # pragma: no cover - the Linux path needs no thread
    while os.getppid() == parent_pid:
        time.sleep(_POLL_S)
    os._exit(1)


# --------------------------------------------------------------------------- what a killed process left
def remove_abandoned(folder: Path, pattern: str) -> list[str]:
    """Remove the entries of ``folder`` (files or folders) whose name matches ``pattern``, a
    regular expression whose group ``pid`` is the process that made them, when that process
    is gone: the temporary files of a process killed mid-write.  Another live process's, or
    this one's, are left alone; so is anything that cannot be removed.  Returns the names
    removed."""
    matches = re.compile(pattern).fullmatch
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        found = matches(name)
        if found is None or int(found.group("pid")) == os.getpid() or pid_alive(int(found.group("pid"))):
            continue
        entry = Path(folder) / name
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(name)
        except OSError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


_terminated = False  # SIGTERM arrived (terminate_as_interrupt's handler ran)


def terminate_as_interrupt() -> None:
    """From now on SIGTERM (what `kill`, systemd and container runtimes send) ends this
    process the way Ctrl-C does: by an exception, so that every ``finally`` and ``except
    BaseException`` cleanup runs (temporary files removed, transactions rolled back) instead of
    the process vanishing mid-write.  Exit status 143, as for an unhandled SIGTERM."""

    def handler(signum, frame):
        global _terminated
        _terminated = True
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (a cleanup that a second signal must
    not cut short); one that arrived meanwhile is delivered when it ends.  Only the main thread
    receives Python's signals; elsewhere this does nothing."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def terminated() -> bool:
    """Whether SIGTERM arrived (and :func:`terminate_as_interrupt`'s handler ran)."""
    return _terminated


# --------------------------------------------------------------------------- signals and SQLite
SQLITE_INTERRUPT = 9  # the result code of a statement stopped by its progress handler
_PROGRESS_EVERY = 100_000  # SQLite virtual-machine instructions (about a millisecond)


def interruptible(con: sqlite3.Connection) -> sqlite3.Connection:
    """Let Ctrl-C (and SIGTERM) stop a long statement of ``con`` within a moment.  Python runs
    signal handlers between bytecodes, never inside a C call: a statement building an index
    over 10^7 rows kept Ctrl-C waiting for half a minute.  A progress handler calls back into
    Python every :data:`_PROGRESS_EVERY` instructions, where a pending signal's handler runs;
    its exception stops the statement (SQLite rolls back) and :func:`reraise_interrupt` turns
    the 'interrupted' error back into the KeyboardInterrupt or SystemExit the signal meant."""
    con.set_progress_handler(_let_signals_in, _PROGRESS_EVERY)
    return con


def _let_signals_in() -> int:
    return 0  # a pending signal's handler runs on entry; 0: go on


def reraise_interrupt(exc: BaseException) -> None:
    """If ``exc`` comes of a signal, raise what the signal meant instead: SystemExit(143) after
    SIGTERM, else KeyboardInterrupt.  It does when it is (or was raised while handling) a SQLite
    statement stopped by a signal (see :func:`interruptible`), or the KeyboardInterrupt or
    SystemExit itself: a database library cleaning up after the interrupt can fail in turn
    ("This transaction is closed"), and that error must not hide the signal."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        orig = getattr(link, "orig", None) or link
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(link, (KeyboardInterrupt, SystemExit)) or (code is not None and int(code) & 0xFF == SQLITE_INTERRUPT):
            if _terminated:
                raise SystemExit(128 + signal.SIGTERM) from None
            raise KeyboardInterrupt from None
        link = link.__cause__ or link.__context__
    if _terminated:  # any failure after SIGTERM arrived is a consequence of it
        raise SystemExit(128 + signal.SIGTERM) from None


# --------------------------------------------------------------------------- the reaper
class Reaper:
    """``Reaper(r"^ray::|/ray/")`` in a driver: a watcher process that, every 0.2 s, notes
    this process's descendants whose command line matches the pattern; if this process dies
    before :meth:`close`, the watcher kills each of them still alive (checked by start time,
    so a reused pid is never hit) and exits.  Only on Linux (it reads /proc); elsewhere a
    no-op.  :meth:`close` after the helpers were stopped the normal way."""

    def __init__(self, pattern: str):
        self._process: subprocess.Popen | None = None
        if not os.path.exists("/proc/self/stat"):
            return
        self._process = subprocess.Popen(
            [sys.executable, "-m", "semhash.lifetime", str(os.getpid()), pattern],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )

    def close(self) -> None:
        """Tell the watcher that the helpers were stopped normally: it exits, killing nothing."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.write(_GOODBYE)  # type: ignore[union-attr]
            process.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the watcher only sleeps and reads
            process.kill()
            process.wait()


def process_table() -> dict[int, tuple[int, int, str]]:
    """``pid -> (parent pid, start time in clock ticks, command line)`` of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                command = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != b"Z":  # a zombie is already dead
            table[int(entry)] = (int(fields[1]), int(fields[19]), command)
    return table


def descendants(table: dict[int, tuple[int, int, str]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _reap(parent_pid: int, pattern: str) -> None:
    """The watcher's loop (``python -m semhash.lifetime PARENT_PID PATTERN``)."""
    import select

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C for the driver's job is not for us
    matches = re.compile(pattern).search
    noted: dict[int, int] = {}  # pid -> start time
    stdin = sys.stdin.buffer
    received = b""
    while True:
        table = process_table()
        for pid in descendants(table, parent_pid) - {os.getpid()}:
            if matches(table[pid][2]):
                noted[pid] = table[pid][1]
        ready, _, _ = select.select([stdin], [], [], 0.2)
        if ready:
            chunk = os.read(stdin.fileno(), 64)
            received += chunk
            if not chunk:  # the pipe closed: a goodbye, or the driver died
                break
    if received.startswith(_GOODBYE):
        return
    for _ in range(3):  # the helpers' own children may still be appearing
        table = process_table()
        targets = {pid for pid, started in noted.items() if pid in table and table[pid][1] == started}
        for pid in set(targets):
            targets |= {child for child in descendants(table, pid) if matches(table[child][2])}
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        noted.update({pid: table[pid][1] for pid in targets if pid in table})
        time.sleep(0.2)


if __name__ == "__main__":  # pragma: no cover - run as the Reaper's watcher process
    _reap(int(sys.argv[1]), sys.argv[2])
