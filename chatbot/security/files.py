"""Owner-only files: the data directory 0700, the database and secret files 0600 (issue #18).

The SQLite database holds every store's identity-signing secret and the agents' password
hashes; the demo login file holds a password. Other local users must not read them.
``chatbot serve`` also sets the process umask to 077, so everything the server creates
later (indexes, logs, SQLite's -wal/-shm files) is private too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700 when this user owns it."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Make an existing file 0600 (when this user owns it)."""
    if path.exists():
        _chmod(path, FILE_MODE)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that is 0600 from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    _chmod(path, FILE_MODE)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and ``:memory:``)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:" or url.count("///") == 0:
        return None
    return Path(path)


def private_database(url: str) -> None:
    """Create a SQLite database file 0600 if missing; make it and its journals 0600."""
    path = sqlite_path(url)
    if path is None:
        return
    if not path.parent.exists():
        private_dir(path.parent)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for suffix in SQLITE_SUFFIXES:
        private_file(path.with_name(path.name + suffix))


def _chmod(path: Path, mode: int) -> None:
    try:
        if path.stat().st_uid == os.getuid():
            path.chmod(mode)
    except OSError as exc:  # e.g. a read-only mount: keep going, say so
        log.warning("could not make %s private (%s)", path, exc)
