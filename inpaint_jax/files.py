"""Writing files safely: one place for atomic writes and writability checks."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, binary: bool = False) -> Iterator[IO]:
    """Opens a new temporary file beside `path`; renames it over `path` on success.

    If the block raises (or the process dies), `path` is left untouched and
    the temporary file is removed, so a reader never sees a half-written
    file. The file gets the usual umask permissions.
    """
    path = Path(path)
    temp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp_path, "xb" if binary else "x", **({} if binary else {"newline": ""})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Creates directory `path` if needed and proves it writable; raises OSError if not."""
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{os.getpid()}_{secrets.token_hex(4)}"
    probe.write_bytes(b"")
    probe.unlink()
    return path
