"""Command-line options shared by every ``meteora`` command that builds a reranker, a
generator backend or a results file: declared once here, used by :mod:`meteora.cli` and
by the benchmarks that register their own sub-commands (``meteora bench poisoning``).

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_selector_options(p)
    >>> selector_settings_from_args(p.parse_args(["--window", "2"])).window
    2
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

__all__ = [
    "add_selector_options",
    "selector_settings_from_args",
    "add_scorer_option",
    "scorer_from_args",
    "add_backend_options",
    "api_key_from_args",
    "backend_kwargs_from_args",
    "command_line",
]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _csv_ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from exc


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from exc
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


# ---------------------------------------------------------------- selector settings
def add_selector_options(parser: argparse.ArgumentParser, *, title: str = "evidence selector") -> None:
    """Add the selector knobs (one declaration for every command that selects evidence).

    Flags: ``--cut``, ``--pairing``, ``--tau``, ``--window``, ``--no-pairing``,
    ``--no-pooling``, ``--order``, ``--no-document-expansion``, ``--min-similarity``,
    ``--evidence-weight``, ``--evidence-band``; defaults are ``SelectorSettings()``'s.
    Build the settings with :func:`selector_settings_from_args`.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_selector_options(p)
        >>> selector_settings_from_args(p.parse_args(["--window", "2"])).window
        2
    """
    from meteora.selection.selector_settings import CUTS, SelectorSettings

    d = SelectorSettings()
    g = parser.add_argument_group(title)
    g.add_argument("--cut", choices=list(CUTS), default=d.cut,
                   help=f"how many chunks to keep: learned (P(relevant), expected-F1 count), band (the evidence "
                        f"band; the elbow without a scorer) or elbow (default {d.cut})")
    g.add_argument("--pairing", choices=["distinct", "convergent"], default=d.pairing,
                   help=f"rationale-chunk pairing (default {d.pairing})")
    g.add_argument("--tau", type=float, default=d.tau, help=f"elbow z-score threshold (default {d.tau})")
    g.add_argument("--window", type=int, default=d.window,
                   help=f"expansion window: add neighbours position±1..N of selected chunks (default {d.window})")
    g.add_argument("--no-pairing", action="store_true", help="skip the pairing stage (ablation)")
    g.add_argument("--no-pooling", action="store_true", help="skip the pooled-elbow stage (ablation)")
    g.add_argument("--order", choices=["score", "document"], default=d.order,
                   help=f"order of the selection (default {d.order})")
    g.add_argument("--no-document-expansion", action="store_true",
                   help="expansion adds only neighbours that are candidates, not chunks from the whole document")
    g.add_argument("--min-similarity", type=_floor_value, default=d.min_similarity,
                   help=f"least cosine (document relevance with a scorer) a selected chunk needs, or 'none' "
                        f"(default {d.min_similarity})")
    g.add_argument("--evidence-weight", type=_calibrated_or_number, default=d.evidence_weight,
                   help="with a scorer: weight of a chunk's evidence gap inside its document "
                        "('calibrated': the scorer's own value, the default)")
    g.add_argument("--evidence-band", type=_calibrated_or_number, default=d.evidence_band,
                   help="with a scorer: keep the chunks within this of the best score "
                        "('calibrated': the scorer's own value, the default)")


def selector_settings_from_args(args: argparse.Namespace):
    """The :class:`~meteora.selection.selector_settings.SelectorSettings` of parsed :func:`add_selector_options` flags.

    Raises:
        InvalidInputError: an invalid combination (e.g. a negative window).
    """
    from meteora.selection.selector_settings import SelectorSettings

    return SelectorSettings(
        pairing=args.pairing,
        tau=args.tau,
        window=args.window,
        use_pairing=not args.no_pairing,
        use_pooling=not args.no_pooling,
        order=args.order,
        expand_from_documents=not args.no_document_expansion,
        min_similarity=args.min_similarity,
        evidence_weight=args.evidence_weight,
        evidence_band=args.evidence_band,
        cut=args.cut,
    )


def _floor_value(value: str) -> float | None:
    if value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {value!r}") from exc


def _calibrated_or_number(value: str) -> float | str:
    if value.strip().lower() == "calibrated":
        return "calibrated"
    try:
        return float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'calibrated' or a number, got {value!r}") from exc


def add_scorer_option(parser: argparse.ArgumentParser) -> None:
    """``--scorer``: the evidence scorer (``default``, an adapter folder, or ``none``)."""
    parser.add_argument(
        "--scorer", default="default",
        help="evidence scorer: 'default' (the packaged adapter), a folder from `meteora train scorer`, "
             "or 'none' (embeddings only)",
    )


def scorer_from_args(args: argparse.Namespace) -> str | None:
    """The ``scorer=`` value of parsed :func:`add_scorer_option` flags."""
    value = getattr(args, "scorer", "default")
    return None if value is None or str(value).lower() == "none" else value


# ---------------------------------------------------------------- generator backend
#: environment variables the API key of an OpenAI-compatible server is read from, in order
API_KEY_ENV_VARS: tuple[str, ...] = ("METEORA_API_KEY", "OPENAI_API_KEY")
#: the ``--backend`` choices
BACKEND_CHOICES: tuple[str, ...] = ("auto", "transformers", "llamacpp", "openai")
# flag -> (the backend it belongs to, its lm_options key)
_BACKEND_ONLY_FLAGS: dict[str, tuple[str, str, str]] = {
    "lm_timeout": ("--lm-timeout", "openai", "timeout"),
    "concurrency": ("--concurrency", "openai", "concurrency"),
    "n_ctx": ("--n-ctx", "llamacpp", "n_ctx"),
}


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from exc
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return x


def _existing_file(value: str) -> str:
    import os

    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"file {value!r} does not exist")
    return value


def add_backend_options(parser: argparse.ArgumentParser, *, title: str = "generator backend") -> None:
    """Add the rationale LM's backend flags (one declaration for every command that generates).

    Flags: ``--backend {auto,transformers,llamacpp,openai}`` (default ``auto``),
    ``--base-url URL``, ``--api-key KEY`` (default: ``$METEORA_API_KEY`` or
    ``$OPENAI_API_KEY``; never printed or written into result files),
    ``--lm-timeout SECONDS`` and ``--concurrency N`` (openai only), ``--n-ctx N``
    (llamacpp only). Turn them into :meth:`RationaleGenerator.from_pretrained
    <meteora.rationales.RationaleGenerator.from_pretrained>` keywords with
    :func:`backend_kwargs_from_args`.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_backend_options(p)
        >>> kw = backend_kwargs_from_args(p.parse_args(["--base-url", "http://127.0.0.1:8000/v1", "--concurrency", "8"]))
        >>> kw["backend"], kw["lm_options"]
        ('openai', {'concurrency': 8})
    """
    g = parser.add_argument_group(title)
    g.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="where the rationale LM runs: 'auto' (openai with --base-url; llama.cpp for the offline "
                        "default when xllamacpp is installed; else transformers), 'transformers', 'llamacpp' "
                        "(a GGUF in-process) or 'openai' (an OpenAI-compatible server: vLLM, llama.cpp server, "
                        "Ollama...; needs --base-url). Default auto")
    g.add_argument("--base-url", default=None, metavar="URL",
                   help="OpenAI-compatible server of the rationale LM, e.g. http://127.0.0.1:8000/v1 "
                        "(then --generator is the served model name)")
    g.add_argument("--api-key", default=None, metavar="KEY",
                   help="the server's API key (default: $METEORA_API_KEY or $OPENAI_API_KEY; none for local "
                        "servers). Prefer the environment variable: it stays out of shell history")
    g.add_argument("--lm-timeout", type=_positive_float, default=None, metavar="SECONDS",
                   help="openai backend: seconds per request (default 60)")
    g.add_argument("--concurrency", type=_positive_int, default=None, metavar="N",
                   help="openai backend: requests in flight at once (default 4)")
    g.add_argument("--n-ctx", type=_positive_int, default=None, metavar="N",
                   help="llamacpp backend: context size in tokens (default 4096)")


def api_key_from_args(args: argparse.Namespace) -> str | None:
    """``--api-key``, else the first of :data:`API_KEY_ENV_VARS` that is set, else ``None``."""
    import os

    key = getattr(args, "api_key", None)
    if key:
        return key
    for name in API_KEY_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def backend_kwargs_from_args(
    args: argparse.Namespace,
    *,
    model: str | None = None,
    adapter: str | None = None,
    torch_only: bool = False,
    with_api_key: bool = True,
) -> dict[str, Any]:
    """``backend``, ``base_url``, ``api_key`` and ``lm_options`` for ``RationaleGenerator.from_pretrained``.

    ``auto`` is resolved here (``openai`` with ``--base-url``; ``transformers`` when
    ``torch_only``, e.g. 4-bit loading; else :func:`meteora.lm.resolve_backend` for
    ``model``/``adapter``) so that only the options of that backend are passed on.

    Args:
        args: parsed :func:`add_backend_options` flags.
        model, adapter: the generator's model and adapter (to resolve ``auto``).
        torch_only: the generator needs torch (4-bit, device...): ``auto`` means transformers.
        with_api_key: include ``api_key`` (``False``: leave it out, e.g. for a results file).

    Raises:
        InvalidInputError: ``--backend openai`` without ``--base-url``, ``--base-url``
            with a local backend, or a flag of another backend (e.g. ``--n-ctx`` on openai).

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_backend_options(p)
        >>> backend_kwargs_from_args(p.parse_args(["--backend", "transformers"]))["lm_options"]
        {}
    """
    from meteora.errors import InvalidInputError
    from meteora.lm import resolve_backend

    backend = getattr(args, "backend", "auto") or "auto"
    base_url = getattr(args, "base_url", None)
    if backend == "openai" and not base_url:
        raise InvalidInputError(
            "--backend openai needs the server's address: pass --base-url URL, e.g. --base-url http://127.0.0.1:8000/v1"
        )
    if base_url and backend in ("transformers", "llamacpp"):
        raise InvalidInputError(
            f"--base-url is the address of an OpenAI-compatible server; it does not go with --backend {backend}. "
            "Drop --base-url, or use --backend openai (or auto)"
        )
    if backend != "auto":
        resolved = backend
    elif base_url:
        resolved = "openai"
    elif torch_only:
        resolved = "transformers"
    else:
        resolved = resolve_backend("auto", model, adapter)
    lm_options: dict[str, Any] = {}
    for attr, (flag, owner, key) in _BACKEND_ONLY_FLAGS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        if resolved != owner:
            how = f"--backend {owner}" + (" --base-url URL" if owner == "openai" else "")
            raise InvalidInputError(
                f"{flag} applies to the {owner} backend only, but the rationale LM runs on {resolved}"
                f"{' (--backend auto)' if backend == 'auto' else ''}; drop {flag}, or use {how}"
            )
        lm_options[key] = value
    out: dict[str, Any] = {"backend": resolved, "base_url": base_url, "lm_options": lm_options}
    if with_api_key:
        out["api_key"] = api_key_from_args(args) if resolved == "openai" else None
    return out


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, for results files, with any ``--api-key`` value masked."""
    key = getattr(args, "api_key", None)
    words: list[str] = []
    mask_next = False
    for word in args._argv:
        name, eq, _ = word.partition("=")
        if mask_next:
            word, mask_next = "***", False
        elif len(name) >= 4 and "--api-key".startswith(name):  # argparse accepts unique prefixes
            if eq:
                word = f"{name}=***"
            else:
                mask_next = True
        if key and key in word:
            word = word.replace(key, "***")
        words.append(word)
    return "meteora " + " ".join(shlex.quote(w) for w in words)


command_line = _command_line
