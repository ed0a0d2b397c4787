"""The folder of a training run: ``checkpoints/``, the resume fingerprint, the atomic final swap.

Layout of ``out_dir``::

    adapter files + meteora_training.json      the finished adapter (METADATA_FILE)
    checkpoints/checkpoint-N/                  the trainer's checkpoints
    checkpoints/meteora_run.json               fingerprint checked before resuming (RUN_FILE)

A run resumes only from checkpoints whose fingerprint (kind, base model, initial adapter,
data digest, settings) matches; the finished adapter is written to a temporary sibling
and renamed into place, carrying ``checkpoints/`` over.

Example:
    >>> import json, pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> read_training_metadata(out) is None
    True
    >>> _ = (out / METADATA_FILE).write_text(json.dumps({"kind": "sft"}), encoding="utf-8")
    >>> read_training_metadata(out)["kind"]
    'sft'
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_json, read_json
from meteora.errors import InvalidInputError
from meteora.training.settings import TrainingSettings

__all__ = ["METADATA_FILE", "RUN_FILE", "CHECKPOINT_DIR", "read_training_metadata"]

logger = logging.getLogger(__name__)

METADATA_FILE = "meteora_training.json"
RUN_FILE = "meteora_run.json"
CHECKPOINT_DIR = "checkpoints"


def read_training_metadata(adapter: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``meteora_training.json`` of an adapter folder (``None`` if absent)."""
    p = Path(adapter) / METADATA_FILE
    return read_json(p) if p.is_file() else None


def _fingerprint(
    kind: str, base: str, adapter: str | None, settings: TrainingSettings, data_sha: str
) -> dict[str, Any]:
    s = settings.to_dict()
    for volatile in ("progress", "num_threads", "save_total_limit", "logging_steps"):
        s.pop(volatile, None)
    return {
        "kind": kind,
        "base_model": base,
        "init_adapter": adapter,
        "data_sha256": data_sha,
        "settings": s,
    }


def _prepare_out_dir(
    out_dir: Path, fingerprint: dict[str, Any], resume: bool
) -> tuple[Path, str | None]:
    """Create ``out_dir/checkpoints``; return it and the checkpoint to resume from (or None)."""
    from transformers.trainer_utils import get_last_checkpoint

    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"out_dir {str(out_dir)!r} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        ours = (out_dir / METADATA_FILE).is_file() or (
            out_dir / CHECKPOINT_DIR / RUN_FILE
        ).is_file()
        if not ours:
            raise InvalidInputError(
                f"out_dir {str(out_dir)!r} is not empty and holds no meteora training run; "
                "choose a new or empty folder (it will be replaced by the adapter)"
            )
    ckpt_dir = out_dir / CHECKPOINT_DIR
    run_file = ckpt_dir / RUN_FILE
    last = None
    if resume and ckpt_dir.is_dir():
        last = get_last_checkpoint(str(ckpt_dir))
        if last is not None:
            previous = read_json(run_file) if run_file.is_file() else None
            if previous is not None:
                # runs fingerprinted before double_quant stopped being a setting
                previous.get("settings", {}).pop("double_quant", None)
            if previous is not None and previous != fingerprint:
                changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
                if "settings" in changed:
                    ps, fs = previous.get("settings", {}), fingerprint["settings"]
                    changed += [f"settings.{k}" for k in sorted(fs) if ps.get(k) != fs[k]]
                raise InvalidInputError(
                    f"{str(ckpt_dir)!r} holds checkpoints of a different run (changed: {', '.join(changed)}); "
                    "pass resume=False to start over, or use another out_dir"
                )
    if not resume and ckpt_dir.is_dir():
        logger.info("resume=False: removing old checkpoints in %s", ckpt_dir)
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_file, fingerprint)
    return ckpt_dir, last


def _finalize_out_dir(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Write the final adapter into a temporary sibling and rename it to ``out_dir``.

    The ``checkpoints`` folder of the old ``out_dir`` is carried over into the new one.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    moved = False
    old: Path | None = None
    try:
        write(tmp)
        ckpt = out_dir / CHECKPOINT_DIR
        if ckpt.is_dir():
            os.replace(ckpt, tmp / CHECKPOINT_DIR)
            moved = True
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None and old.exists() and not out_dir.exists():
            os.replace(old, out_dir)
        if moved and (tmp / CHECKPOINT_DIR).is_dir():
            out_dir.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / CHECKPOINT_DIR, out_dir / CHECKPOINT_DIR)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

