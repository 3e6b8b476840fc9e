"""Fault injection for tests: writes cut by a kill, a full disk, files swapped between two runs."""

from __future__ import annotations

import errno
import os
import types
from pathlib import Path


def cut_last_line(path: Path, keep: float = 0.5) -> bytes:
    """Cut ``path`` inside its last line, as a kill in the middle of writing that line would;
    returns the bytes removed."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = start + max(1, int((len(data) - start) * keep))
    cut = min(cut, len(data) - 1)  # never keep the line's newline
    path.write_bytes(data[:cut])
    return data[cut:]


def write_partially(path: Path, data: bytes, keep: float = 0.5) -> None:
    """Write only the first ``keep`` fraction of ``data`` to ``path`` (a kill during the write)."""
    path.write_bytes(data[: int(len(data) * keep)])


def swap_bytes(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place with ``data``, keeping its modification time (as ``cp -p`` or a
    restore from backup would), so only the content tells the files apart."""
    before = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


class _FullDiskFile:
    """A file object whose writes fail with ENOSPC once the shared byte budget is spent."""

    def __init__(self, handle, budget: list[int]):
        self._handle = handle
        self._budget = budget

    def write(self, data):
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def full_disk(monkeypatch, module: types.ModuleType, *, after: int = 0) -> None:
    """Make the files ``module`` opens for writing (``open``, ``os.fdopen``, ``os.write``) fail with
    ENOSPC once ``after`` bytes were written through them; reading is untouched."""
    budget = [after]

    def wrap(opener):
        def opened(file, mode="r", *args, **kwargs):
            handle = opener(file, mode, *args, **kwargs)
            return _FullDiskFile(handle, budget) if any(c in mode for c in "wax+") else handle
        return opened

    def write(fd, data):
        if len(data) > budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(data)
        return os.write(fd, data)

    fake_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    fake_os.fdopen, fake_os.write = wrap(os.fdopen), write
    monkeypatch.setattr(module, "open", wrap(open), raising=False)
    if hasattr(module, "os"):
        monkeypatch.setattr(module, "os", fake_os)
