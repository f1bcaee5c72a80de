"""An exclusive OS lock on a run (or bench) directory, held for the whole run.

``DirectoryLock(root).acquire()`` takes ``fcntl.flock`` on ``root/.lock`` and
writes the holder's PID into it. A second process that asks for the same
directory is refused at once with :class:`DirectoryLockedError`, naming the
holder's PID. The kernel drops the lock when its holder exits, however it
exits (even SIGKILL), so a lock file left by a dead process does not block:
only a live holder does. The file itself stays (removing it would let two
processes lock two different files of the same name).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from lightly_graft.errors import GraftError

LOCK = ".lock"


class DirectoryLockedError(GraftError):
    """Another live process holds the directory's lock."""


def check_directory(
    root: str | Path, what: str = "run directory", error: OSError | None = None
) -> None:
    """Raises a :class:`GraftError` if ``root`` cannot be created or written as a
    directory; given the ``error`` that using it raised, in any case."""
    root = Path(root)
    existing = root if root.exists() else next(p for p in root.parents if p.exists())
    if root.exists() and not root.is_dir():
        problem: str | None = "it is a file"
    elif not existing.is_dir():
        problem = f"'{existing}' is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"'{existing}' is not writable (permissions)"
    else:
        problem = (error.strerror or str(error)) if error else None
    if problem:
        raise GraftError(
            f"{what} '{root}' cannot be used: {problem}; give a writable --output"
        ) from None


class DirectoryLock:
    """The lock of directory ``root`` (created if missing); ``what`` names it in
    messages ("run directory", "bench directory")."""

    def __init__(self, root: str | Path, what: str = "run directory") -> None:
        self.root = Path(root)
        self.what = what
        self.path = self.root / LOCK
        self._fd: int | None = None

    def holder(self) -> str:
        """The PID written by the holder, or '?'."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def acquire(self) -> DirectoryLock:
        """Takes the lock; raises :class:`DirectoryLockedError` if it is held."""
        if self._fd is not None:
            return self
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            check_directory(self.root, self.what, error)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DirectoryLockedError(
                f"{self.what} '{self.root}' is in use by another lightly-graft "
                f"process (PID {self.holder()}); wait for it to finish or stop it, "
                "or give another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drops the lock (a no-op if not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
