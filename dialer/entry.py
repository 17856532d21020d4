"""The ``dialer`` command's entry point, ahead of the CLI's own imports (about a second of them).

An import of a big file reads it in a process of its own, forked from a fork server that imports
the importer first (see ``dialer.importer._read_aside``). Started here, the server imports beside
this process instead of after it, and the reading starts a second sooner.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

READ_ASIDE = 8 * 1024 * 1024
"""Bytes from which a file is read in a process of its own (about 100,000 rows): below, the second
of starting it costs more than it saves."""


def main() -> None:
    try:
        prepare(sys.argv[1:])
        from dialer.cli import main as cli
    except KeyboardInterrupt:  # Ctrl-C before the command began: nothing was done
        sys.exit(130)
    cli()


def prepare(arguments: Sequence[str]) -> bool:
    """Start the reading process's fork server when ``arguments`` import a file of
    :data:`READ_ASIDE` bytes or more; whether it was started."""
    words = [word for word in arguments if not word.startswith("-")]
    if not words or words[0] != "import" or not any(_big(word) for word in words[1:]):
        return False
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    multiprocessing.set_forkserver_preload(["dialer.importer"])
    # The server ignores Ctrl-C, which is this process's to handle, from its very start (it would
    # only once its imports are done).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)
    return True


def _big(word: str) -> bool:
    try:
        path = Path(word)
        return path.is_file() and path.stat().st_size >= READ_ASIDE
    except (OSError, ValueError):
        return False
