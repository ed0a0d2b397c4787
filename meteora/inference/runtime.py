"""The runtime choice for the encoder and the evidence scorer: ``auto``, ``onnx`` or ``torch``.

``auto`` picks ONNX Runtime for meteora's default models on the CPU when it is installed
(and the export exists or can be made; the callers fall back to torch otherwise). A
device other than the CPU always means torch. ``$METEORA_RUNTIME`` sets the default for
every encoder and scorer built without an explicit ``runtime=``.

Example:
    >>> resolve_runtime(None, "cuda")  # a GPU: torch
    'torch'
    >>> resolve_runtime("ONNX", "cpu")
    'onnx'
"""

from __future__ import annotations

import importlib.util
import os

from meteora.errors import InvalidInputError

__all__ = ["RUNTIMES", "RUNTIME_ENV", "resolve_runtime", "onnx_runtime_available", "onnx_export_available"]

#: The accepted values of ``runtime=`` and ``$METEORA_RUNTIME``.
RUNTIMES = ("auto", "onnx", "torch")
#: The environment variable holding the default runtime.
RUNTIME_ENV = "METEORA_RUNTIME"


def resolve_runtime(runtime: str | None, device: str | None) -> str:
    """``"auto"``, ``"onnx"`` or ``"torch"``: ``runtime``, else ``$METEORA_RUNTIME``, else ``"auto"``.

    ``auto`` on a device other than the CPU is ``torch``.

    Raises:
        InvalidInputError: an unknown value, or ``onnx`` asked for on a GPU device.

    Example:
        >>> resolve_runtime("auto", None)
        'auto'
    """
    source = "runtime"
    value = runtime
    if value is None:
        value, source = os.environ.get(RUNTIME_ENV) or "auto", RUNTIME_ENV
    if not isinstance(value, str) or value.strip().lower() not in RUNTIMES:
        raise InvalidInputError(f"{source} must be one of {', '.join(RUNTIMES)}; got {value!r}")
    value = value.strip().lower()
    on_cpu = device is None or str(device).strip().lower() == "cpu"
    if value == "auto" and not on_cpu:
        return "torch"
    if value == "onnx" and not on_cpu:
        raise InvalidInputError(
            f"the ONNX runtime runs on the CPU only; got device={device!r} with {source}='onnx': "
            "pass device=None or 'cpu', or runtime='torch' for the GPU"
        )
    return value


def onnx_runtime_available() -> bool:
    """Whether ``onnxruntime`` and ``tokenizers`` can be imported (running an export).

    Example:
        >>> isinstance(onnx_runtime_available(), bool)
        True
    """
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def onnx_export_available() -> bool:
    """Whether an export can be made here (``torch``, ``onnx`` and ``onnxscript`` importable).

    Example:
        >>> isinstance(onnx_export_available(), bool)
        True
    """
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx", "onnxscript"))
