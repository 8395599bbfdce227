"""Writing a file all or nothing: the old file or the new one, never a part.

:func:`write_atomically` is how :func:`updates.save_state` writes a checkpoint: a temporary file
beside the target (named with the writer's PID, so a later write can tell a dead writer's
leftovers from a live one's), flushed and synced, renamed over the target, the directory synced.
Nothing here knows the checkpoint format.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["write_atomically"]


def write_atomically(path: str, write: Callable[[BinaryIO], None], who: str) -> None:
    """Write a file at ``path`` with ``write(file)``, all or nothing.

    ``write`` fills a new temporary file beside ``path``, which is flushed to disk and renamed
    over ``path`` (keeping an existing file's mode), then the directory is synced: a reader sees
    the old file or the new one, never a part, and a process killed meanwhile leaves the old
    file as it was. Temporary files left by dead processes are removed first; those of live
    ones (in this process: of other threads) are kept. Errors name ``who``.
    """
    directory, base = os.path.split(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{who}: {path} is a directory")
    _remove_stale_temporaries(directory, base)
    temporary, fd = _create_temporary(directory, base)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)  # keep an existing file's mode
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    finally:
        _release(temporary)
    _fsync_directory(directory)


# The names of the temporary files this process is writing now (in any thread): no save removes them.
_ACTIVE: set[str] = set()

_ACTIVE_LOCK = threading.Lock()


def _temporary_name(base: str, pid: int, token: str) -> str:
    """``.<base>.<pid>.<token>.tmp``: the writer's PID and 12 random hex digits."""
    return f".{base}.{pid}.{token}.tmp"


def _temporary_pattern(base: str) -> re.Pattern:
    """What :func:`_temporary_name` makes of ``base``, for ``fullmatch``; group 1 is the PID.

    The PID and the token hold no dot, so a name matches for one ``base`` only: the temporary
    files of ``a.npz.1`` or ``a.npz.bak`` are never taken for those of ``a.npz``.
    """
    return re.compile(rf"\.{re.escape(base)}\.([0-9]+)\.[0-9a-f]{{12}}\.tmp")


def _create_temporary(directory: str, base: str) -> tuple[str, int]:
    """A new file next to ``path``, created with the process's umask (unlike ``mkstemp``'s 0600).

    Its name holds this process's PID (see :func:`_temporary_name`), so that a later save can tell
    whether the process that wrote it is still alive. It is marked active before it exists, and
    stays so until :func:`_release`.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = os.path.join(directory, _temporary_name(base, os.getpid(), secrets.token_hex(6)))
        with _ACTIVE_LOCK:
            _ACTIVE.add(os.path.basename(temporary))
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            _release(temporary)
            continue
        except BaseException:
            _release(temporary)
            raise


def _release(temporary: str) -> None:
    """No longer mark ``temporary`` as being written by this process."""
    with _ACTIVE_LOCK:
        _ACTIVE.discard(os.path.basename(temporary))


def _remove_stale_temporaries(directory: str, base: str) -> None:
    """Remove the temporary files of saves to ``<directory>/<base>`` whose writer is gone.

    Only regular files named exactly as :func:`_create_temporary` names them for this ``base`` are
    considered, and only those are removed whose PID is not a live process, or is this process's
    but the file is not one that a save of this process is writing now: the leftovers of a save
    killed outright (SIGKILL, power loss), which never got to remove its file. A file that cannot
    be removed is left as it is; the save goes on.
    """
    pattern = _temporary_pattern(base)
    try:
        with os.scandir(directory) as found:
            candidates = [e for e in found if pattern.fullmatch(e.name) and _is_regular_file(e)]
    except OSError:
        return
    for entry in candidates:
        pid = int(pattern.fullmatch(entry.name).group(1))
        if _is_stale(entry.name, pid):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _is_regular_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _is_stale(name: str, pid: int) -> bool:
    """Whether the writer of the temporary file ``name`` (process ``pid``) is gone: no one will finish it."""
    if pid == os.getpid():
        with _ACTIVE_LOCK:
            return name not in _ACTIVE
    return _process_is_gone(pid)


def _process_is_gone(pid: int) -> bool:
    """True only if there surely is no process ``pid`` (a PID reused since is taken as alive)."""
    if os.name != "posix" or pid <= 0:  # Windows: os.kill(pid, 0) would terminate the process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: alive, another user's
        return False
    return False


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; elsewhere a no-op)."""
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
