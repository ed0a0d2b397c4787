"""Two small helpers shared by the LM loaders: is a model reference a local path, and
an exception's first line (for one-line error messages).

Example:
    >>> from meteora.lm.load_helpers import _first_line, _looks_like_path
    >>> _looks_like_path("./my-adapter"), _looks_like_path("org/model")
    (True, False)
    >>> _first_line(ValueError("bad shape\\ndetails"))
    'bad shape'
"""

from __future__ import annotations

import os


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or (os.sep != "/" and os.sep in name)
        or name.count("/") > 1
    )
