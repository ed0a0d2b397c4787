"""``.npy`` files written a block at a time, for arrays larger than memory.

:class:`NpyAppender` writes a 2-D float32 ``.npy`` whose row count is not known in
advance: the header reserves room for any count and is rewritten with the final shape
on :meth:`~NpyAppender.close`. :func:`save_npy_blocks` writes a whole (possibly
memory-mapped) array block by block. Files are plain ``.npy`` (version 1.0, no pickle):
``numpy.load(path, mmap_mode="r")`` maps them.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "e.npy"
    >>> with NpyAppender(path, dim=2) as out:
    ...     out.append(np.ones((3, 2), dtype=np.float32))
    ...     out.append(np.zeros((1, 2), dtype=np.float32))
    >>> np.load(path).shape
    (4, 2)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NpyAppender", "save_npy_blocks"]

_MAGIC = b"\x93NUMPY\x01\x00"
#: total header bytes reserved (magic + length + dict, padded): room for any row count
_HEADER_BYTES = 128
#: rows copied per block by :func:`save_npy_blocks`
_BLOCK_ROWS = 65_536


def _header(rows: int, dim: int, dtype: np.dtype) -> bytes:
    body = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, dim)})
    pad = _HEADER_BYTES - len(_MAGIC) - 2 - len(body) - 1
    if pad < 0:
        raise ValueError(f"shape {(rows, dim)} does not fit the reserved .npy header")
    text = (body + " " * pad + "\n").encode("latin1")
    return _MAGIC + len(text).to_bytes(2, "little") + text


class NpyAppender:
    """Append rows to a new ``(n, dim)`` ``.npy`` file; the row count is set on close."""

    def __init__(self, path: str | os.PathLike[str], dim: int, dtype: Any = np.float32) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._fh = open(self.path, "xb")
        self._fh.write(_header(0, self.dim, self.dtype))

    def append(self, block: np.ndarray) -> None:
        """Write ``block`` (``(m, dim)``) after the rows written so far."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected a (m, {self.dim}) block, got {block.shape}")
        self._fh.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        """Write the final shape into the header and close the file."""
        if self._fh.closed:
            return
        self._fh.seek(0)
        self._fh.write(_header(self.rows, self.dim, self.dtype))
        self._fh.close()

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def save_npy_blocks(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a 2-D array (in memory or memory-mapped) to a new ``.npy`` file, block by block."""
    with NpyAppender(path, array.shape[1], array.dtype) as out:
        for start in range(0, len(array), _BLOCK_ROWS):
            out.append(array[start : start + _BLOCK_ROWS])
