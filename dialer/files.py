"""Files the dialer writes for the operator (results, reports, rejects): whole, or not at all.

Each is written to a temporary file beside its target and renamed into place only once it is
complete, so a full disk, a killed process or a bad value never leaves half a file, nor destroys
the file that was there before. An operating system's refusal is one line naming the path and why.

A file comes out as a plain ``open()`` would leave it: a new one with the mode 0666 less the
umask, one replaced with the mode it had; a symlink is followed (the file it leads to is written,
and the link stays a link).
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from dialer.errors import WriteFailed


class Written(NamedTuple):
    path: Path
    """Where the file is: the path given, or (not replacing) the unused name chosen beside it."""
    replaced: bool
    """Whether it took the place of a file that was there."""


def write_atomically(path: Path, write: Callable[[Path], None], *, replace: bool = True) -> Written:
    """Have ``write`` make the file at a temporary path beside ``path``, then put it in place:
    over the file at ``path`` (``replace``), else at the first of ``path``, ``NAME-2.ext``,
    ``NAME-3.ext``... that does not exist, never over a file (:func:`unused_names`)."""
    shown, partial = str(path), None
    try:
        # Every step is inside: a directory where no file can be made fails as a full disk does.
        target = destination(path) if replace else destination(path.parent) / path.name
        if replace and os.path.islink(path):
            shown = f"{path} (a link to {target})"
        if not target.parent.is_dir():
            raise WriteFailed(f"{shown}: no such directory {str(target.parent)!r}")
        mode = _mode(target) if replace else None
        partial = _temporary(target, mode)
        write(partial)
        if mode is not None:
            os.chmod(partial, mode)  # exactly: writable by its owner while it was written
        if not replace:
            return Written(path.with_name(_link_unused(partial, target).name), replaced=False)
        os.replace(partial, target)
        return Written(path, replaced=mode is not None)
    except OSError as error:
        raise WriteFailed(f"{shown}: cannot be written: {why(error)}") from None
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)


def unused_names(path: Path) -> Iterator[Path]:
    """``path``, then ``NAME-2.ext``, ``NAME-3.ext``...: the number goes before the last suffix
    only (``contacts.rejects.csv``, ``contacts.rejects-2.csv``), whatever dots the name has."""
    yield path
    for number in itertools.count(2):
        yield path.with_name(f"{path.stem}-{number}{path.suffix}")


_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
"""What ``link()`` answers on a file system without hard links (FAT, exFAT, some shares)."""


def _link_unused(partial: Path, path: Path) -> Path:
    """Give ``partial`` the first of :func:`unused_names` of ``path`` that is free, and that name.

    A hard link is refused where the name exists, unlike a rename, so a file made there since we
    looked (another import's) is never replaced. Where the file system has no hard links, looking
    first must do."""
    for candidate in unused_names(path):
        try:
            os.link(partial, candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                raise
            if not os.path.lexists(candidate):
                os.replace(partial, candidate)
                return candidate
    raise AssertionError  # not reached: there is always a next name


def destination(path: Path) -> Path:
    """Where writing ``path`` lands: ``path``, or the file its symlinks lead to (renaming over the
    link itself would make it a file of its own and leave its target as it was). A symlink loop
    raises ``OSError`` (ELOOP), as ``open()`` would."""
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        target = Path(os.path.realpath(path))  # a new file, or a link to one not there yet
    # Not strict, realpath stops at a loop it meets after a missing part, and returns a link.
    if target.is_symlink():
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    return target


def _mode(path: Path) -> int | None:
    """The permission bits of the file at ``path`` (None: there is none)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def _temporary(target: Path, mode: int | None) -> Path:
    """A new empty file beside ``target`` with the ``mode`` of the file it is to replace, given
    before anything is written to it (a private file stays private throughout); else made as
    ``open()`` makes one (0666 less the umask; ``mkstemp``'s 0600 would keep the results from
    whoever the operator shares them with)."""
    while True:
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
        except FileExistsError:
            continue  # another writer's: draw another name
        try:
            if mode is not None:
                os.fchmod(handle, mode | stat.S_IWUSR)
        finally:
            os.close(handle)
        return partial


def why(error: OSError) -> str:
    """The system's words for an error (Arrow's name the errno only in their message)."""
    number = error.errno
    if number is None and (found := re.search(r"\[errno (\d+)\]", str(error))):
        number = int(found[1])
    if number == errno.ELOOP:
        return f"{os.strerror(number)}: it leads nowhere (a symlink loop)"
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


def write_text(path: Path, text: str, *, replace: bool = True) -> Written:
    """``text`` (UTF-8) at ``path``, whole or not at all (see :func:`write_atomically`)."""

    def write(partial: Path) -> None:
        partial.write_text(text, encoding="utf-8")

    return write_atomically(path, write, replace=replace)
