"""Files the dialer writes for the operator (results, reports, rejects): whole, or not at all.

Each is written to a temporary file beside its target and renamed into place only once it is
complete, so a full disk, a killed process or a bad value never leaves half a file, nor destroys
the file that was there before. An operating system's refusal is one line naming the path and why.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from dialer.errors import WriteFailed


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Have ``write`` make the file at a temporary path beside ``path``, then put it in place."""
    if not path.parent.is_dir():
        raise WriteFailed(f"{path}: no such directory {str(path.parent)!r}")
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    partial = Path(name)
    try:
        write(partial)
        os.replace(partial, path)
    except OSError as error:
        raise WriteFailed(f"{path}: cannot be written: {_why(error)}") from None
    finally:
        partial.unlink(missing_ok=True)


def _why(error: OSError) -> str:
    """The system's words for an error (Arrow's name the errno only in their message)."""
    number = error.errno
    if number is None and (found := re.search(r"\[errno (\d+)\]", str(error))):
        number = int(found[1])
    return os.strerror(number) if number else str(error)


def not_a_file(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read (None: it is one)."""
    if path.is_file():
        return None
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a directory, not a file"
    if path.is_fifo():
        return "is a named pipe (FIFO), not a file: it is read more than once, so give a file"
    if path.is_char_device() or path.is_block_device():
        return "is a device, not a file"
    if path.is_socket():
        return "is a socket, not a file"
    return "is not a regular file"


def write_text(path: Path, text: str) -> None:
    """``text`` (UTF-8) at ``path``, whole or not at all."""

    def write(partial: Path) -> None:
        partial.write_text(text, encoding="utf-8")

    write_atomically(path, write)
