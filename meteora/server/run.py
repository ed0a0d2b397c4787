"""Running the service: the ``meteora serve`` options, and a server in a background
thread (tests, benchmarks, notebooks) — both on uvicorn.

``meteora serve`` takes the reranker options of ``meteora rerank`` (``--no-lm``,
``--generator``, the ``--backend``/``--base-url`` flags of a vLLM or llama.cpp server,
the selector knobs) plus the ones :func:`add_serve_options` declares. One process
serves one reranker; run several (``--port`` each) behind a load balancer to scale out.

Example:
    >>> from meteora import Reranker  # doctest: +SKIP
    >>> with BackgroundServer(create_app(Reranker(generator=None))) as server:  # doctest: +SKIP
    ...     httpx.post(server.url + "/v1/rerank", json={"query": "q", "documents": ["a"]}).json()
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import time
from typing import Any

from meteora.cli_options import _positive_int
from meteora.errors import MeteoraError, require

__all__ = ["add_serve_options", "settings_from_args", "serve", "BackgroundServer", "SERVER_KEY_ENV"]

logger = logging.getLogger(__name__)

#: Environment variable holding the key clients must send (``--server-api-key``'s default).
SERVER_KEY_ENV = "METEORA_SERVER_API_KEY"


def _non_negative_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}") from exc
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return x


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Add the service's own flags (address, key, limits, batching) to ``parser``.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_serve_options(p)
        >>> a = p.parse_args(["--port", "9000", "--max-batch-size", "4"])
        >>> settings_from_args(a).max_batch_size, a.port
        (4, 9000)
    """
    from meteora.server.settings import DEFAULTS

    g = parser.add_argument_group("service")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 to accept other machines, behind a proxy)")
    g.add_argument("--port", type=_positive_int, default=8080, help="port (default 8080)")
    g.add_argument("--server-api-key", default=None, metavar="KEY",
                   help=f"key clients must send as 'Authorization: Bearer KEY' (default: ${SERVER_KEY_ENV}; "
                        "none: open). Prefer the variable: it stays out of shell history")
    g.add_argument("--model-name", default=DEFAULTS.model_name, help="name given by /v1/models and responses")
    g.add_argument("--max-documents", type=_positive_int, default=DEFAULTS.max_documents,
                   help=f"most documents per request (default {DEFAULTS.max_documents})")
    g.add_argument("--max-document-chars", type=_positive_int, default=DEFAULTS.max_document_chars,
                   help=f"longest document in characters (default {DEFAULTS.max_document_chars})")
    g.add_argument("--max-query-chars", type=_positive_int, default=DEFAULTS.max_query_chars,
                   help=f"longest query in characters (default {DEFAULTS.max_query_chars})")
    g.add_argument("--max-body-bytes", type=_positive_int, default=DEFAULTS.max_body_bytes,
                   help=f"largest request body (default {DEFAULTS.max_body_bytes})")
    g.add_argument("--max-batch-size", type=_positive_int, default=DEFAULTS.max_batch_size,
                   help=f"most concurrent requests batched into one model call (default {DEFAULTS.max_batch_size})")
    g.add_argument("--max-wait-ms", type=_non_negative_float, default=DEFAULTS.max_wait_ms,
                   help=f"how long a request waits for others to batch with (default {DEFAULTS.max_wait_ms:g} ms)")
    g.add_argument("--max-queue", type=_positive_int, default=DEFAULTS.max_queue,
                   help=f"most requests waiting; more get 503 (default {DEFAULTS.max_queue})")
    g.add_argument("--access-log", action="store_true",
                   help="log one line per request (method, path, status; uvicorn's access log); off by default")
    g.add_argument("--docs", action="store_true",
                   help="serve the Swagger UI page at /docs (its scripts come from a CDN, so the browser needs "
                        "network access; behind the key when one is set). /openapi.json is always served")


def settings_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~meteora.server.app.ServeSettings` of parsed :func:`add_serve_options` flags."""
    from meteora.server.settings import DEFAULTS

    key = getattr(args, "server_api_key", None) or os.environ.get(SERVER_KEY_ENV) or None
    return DEFAULTS.replace(
        model_name=args.model_name, api_key=key, max_documents=args.max_documents,
        max_document_chars=args.max_document_chars, max_query_chars=args.max_query_chars,
        max_body_bytes=args.max_body_bytes, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue, docs=bool(getattr(args, "docs", False)),
    )


def serve(
    reranker: Any, settings: Any, *, host: str = "127.0.0.1", port: int = 8080, log_level: str | None = None,
    access_log: bool = False,
) -> None:
    """Serve ``reranker`` on ``host:port`` until interrupted (uvicorn, one process).

    ``log_level``: uvicorn's (default: that of the ``meteora`` logger, so ``meteora -q
    serve`` is quiet and ``-v`` is not). ``access_log``: one log line per request.
    """
    if log_level is None:
        level = logging.getLogger("meteora").getEffectiveLevel()
        log_level = "debug" if level <= logging.DEBUG else "info" if level <= logging.INFO else "warning"
    require("fastapi", "serve", "meteora serve")
    uvicorn = require("uvicorn", "serve", "meteora serve")
    from meteora.server.app import create_app

    app = create_app(reranker, settings)
    logger.info("serving %s on http://%s:%d (key %s%s)", settings.model_name, host, port,
                "required" if settings.api_key else "not required", "; API page at /docs" if settings.docs else "")
    if access_log:  # one line per request, in the command line's format (not held back like uvicorn's other notices)
        _show_access_log()
    # log_config=None: uvicorn's records go through the process's logging as the command line
    # set it up (one format; its startup notices, which repeat the line above, only with -v)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log, log_config=None)


def _show_access_log() -> None:
    from meteora.console import LOG_DATE_FORMAT, LOG_FORMAT

    access = logging.getLogger("uvicorn.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt=LOG_DATE_FORMAT))
        access.addHandler(handler)
    access.propagate = False


class BackgroundServer:
    """An ASGI app on uvicorn in a daemon thread, on a free loopback port.

    Use as a context manager; ``url`` is ``http://127.0.0.1:PORT``. Stops (and joins the
    thread) on exit.

    Args:
        app: the ASGI app (e.g. :func:`~meteora.server.app.create_app`'s).
        host: address to bind (default 127.0.0.1).
        start_timeout: seconds to wait for the server to accept connections.
        access_log: log one line per request (uvicorn's ``uvicorn.access`` logger).
    """

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", start_timeout: float = 30.0, access_log: bool = False,
    ) -> None:
        uvicorn = require("uvicorn", "serve", "meteora.server.BackgroundServer")
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        # log_config=None: uvicorn's records go to this process's logging as it is set up,
        # instead of uvicorn replacing the logging configuration of the host program
        config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log,
                                lifespan="on", log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True,
                                        name="meteora-serve")
        self.start_timeout = start_timeout

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise MeteoraError(f"the server did not start within {self.start_timeout:g} s; see its log above")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._sock.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()
