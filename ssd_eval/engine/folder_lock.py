"""One run at a time: the output-folder lock (a results folder, from its first file to its last) and the
same refusal on an open resume-cache file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import IO, Iterator

from ssd_eval.errors import UserError

BUSY = "another run is using this output directory; wait for it to finish or choose another --out"


def lock_file(handle: IO[bytes], path: str | Path) -> None:
    """Lock the open file ``handle`` (``path``); close it and raise a UserError when another run holds it."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(f"{path}: {BUSY}") from None


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the existing folder ``folder`` for the block; a UserError when another run
    (or block) holds it. ``flock`` on the folder itself: no lock file is left behind."""
    folder = Path(folder)
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UserError(f"{folder}: cannot open the output directory: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError(f"{folder}: {BUSY}") from None
            raise UserError(f"{folder}: cannot lock the output directory: {exc.strerror or exc}") from None
        yield folder
    finally:
        os.close(descriptor)  # releases the lock
