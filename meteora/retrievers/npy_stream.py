"""``.npy`` files written a block at a time, for arrays larger than memory.

:class:`NpyAppender` writes a 2-D float32 ``.npy`` whose row count is not known in
advance: the header reserves room for any count and is rewritten with the final shape
on :meth:`~NpyAppender.close`. :func:`save_npy_blocks` writes a whole (possibly
memory-mapped) array block by block. :class:`NpyRowReader` reads scattered rows with
``pread`` (searches that touch a few rows of a large file do not map it into the process). Files are plain ``.npy`` (version 1.0, no pickle):
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

__all__ = ["NpyAppender", "save_npy_blocks", "NpyRowReader"]

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


class NpyRowReader:
    """Scattered rows of a 2-D ``.npy`` file, read with ``os.pread`` from a descriptor kept
    open (the rows stay valid after the file's folder is removed by a later save).

    The rows come through the page cache, not a memory map: a search that reads a few
    hundred rows of a 1.5 GB file adds those rows, not the file, to the process.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "e.npy"
        >>> np.save(path, np.arange(12, dtype=np.float32).reshape(4, 3))
        >>> NpyRowReader(path).rows([3, 1]).tolist()
        [[9.0, 10.0, 11.0], [3.0, 4.0, 5.0]]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        arr = np.load(path, mmap_mode="r")
        self.path = Path(path)
        self.shape, self.dtype, self._offset = arr.shape, arr.dtype, arr.offset
        del arr
        self._fd = os.open(self.path, os.O_RDONLY)
        self._width = int(self.shape[1]) * self.dtype.itemsize

    def rows(self, rows: Any) -> np.ndarray:
        """The rows at these (0-based) indices, in the order given."""
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"row out of range 0..{self.shape[0] - 1}")
        out = np.empty((len(idx), self.shape[1]), dtype=self.dtype)
        w, off, fd = self._width, self._offset, self._fd
        for i, r in enumerate(idx.tolist()):
            out[i] = np.frombuffer(os.pread(fd, w, off + r * w), dtype=self.dtype)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
