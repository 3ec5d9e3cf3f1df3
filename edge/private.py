"""Files about people (events with keypoints, snapshots, traces, model outputs of people's
frames) are owner-only, whatever the umask: the one place that says how."""


import os
from pathlib import Path
from typing import IO


def private_folder(folder: Path) -> Path:
    """Make the folder (and its parents) and leave it 0700, even if it was there already."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder


def private_file(path: Path) -> Path:
    """Create the file if missing and leave it 0600, before anything is written to it."""
    os.close(os.open(str(path), os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
    return path


def open_private(path: Path, mode: str = "w") -> IO:
    """Open for writing from the start ("w" or "wb"); a new file is created 0600."""
    descriptor = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(descriptor, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
