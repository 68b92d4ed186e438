"""One writer per folder: a process writing a run or sweep folder holds an OS file lock
(flock) on the folder's `.aesweep.lock`. The kernel drops it when the process ends, however
it ends, so `kill -9` or a requeued job never leave a stale lock behind."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path

from aesweep.config import ConfigError

LOCK = ".aesweep.lock"
_held: dict[Path, int] = {}  # folder -> descriptor: a process takes each folder once


class FolderLocked(ConfigError):
    """Another live process writes the folder; the message names it (pid, host)."""


def lock_folder(folder: str | Path, setting: str) -> None:
    """Hold `folder`'s lock until this process ends or calls `unlock_all`. If another
    process holds it, raise FolderLocked: `setting` (e.g. 'resume=DIR') is invalid, naming
    the holder."""
    folder = Path(folder).absolute()
    if folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 256).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise FolderLocked(
            f"{setting} is invalid: {holder} is writing {folder}; wait until it ends"
        ) from None
    except OSError as e:  # a file system without flock (some network mounts): go on unlocked
        os.close(fd)
        print(f"aesweep: cannot lock {folder} ({e.strerror}); make sure no other process "
              f"writes there", file=sys.stderr)  # fmt: skip
        return
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _held[folder] = fd


def unlock_all() -> None:
    """Drop every lock this process holds (when a command ends, in a long-lived process)."""
    while _held:
        os.close(_held.popitem()[1])  # closing the descriptor drops the lock
