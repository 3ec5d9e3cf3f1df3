"""Files about people (events with keypoints, snapshots, traces, model outputs of people's
frames) are owner-only, whatever the umask: the one place that says how."""


import errno
import os
import stat
from pathlib import Path
from typing import IO


def private_folder(folder: Path) -> Path:
    """Make the folder (and its parents) and leave it 0700, even if it was there already."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder


def private_file(path: Path) -> Path:
    """Create the file if missing and leave it 0600, before anything is written to it. Only a
    regular file is changed: a device, a FIFO or a symlink given as the path (by mistake, or as
    root: /dev/full once became 0600) raises OSError and keeps its mode."""
    flags = os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(str(path), flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)
    return path


def open_private(path: Path, mode: str = "w") -> IO:
    """Open for writing from the start ("w" or "wb"); a new file is created 0600."""
    descriptor = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(descriptor, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
