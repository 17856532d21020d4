"""Text built a column at a time with Arrow's string kernels (the XLSX sheet, the import's COPY)."""

from __future__ import annotations

import pyarrow as pa

LARGE = pa.large_string()
"""The type every piece is cast to: 64-bit offsets, so a batch's text may pass 2 GiB."""


def literal(value: str) -> pa.Scalar:
    """``value`` as a scalar to join with columns of :data:`LARGE` text."""
    return pa.scalar(value, LARGE)


def joined(texts: pa.Array) -> memoryview:
    """The characters of a large-string array, end to end, as they lie in its data buffer (no copy)."""
    offsets = memoryview(texts.buffers()[1]).cast("q")
    start, end = offsets[texts.offset], offsets[texts.offset + len(texts)]
    return memoryview(texts.buffers()[2])[start:end]
