"""``meteora serve``: METEORA as an HTTP rerank service (extra ``serve``: FastAPI + uvicorn).

* :mod:`meteora.server.app`: the FastAPI app (``/v1/rerank`` in the Cohere/Jina shape,
  ``/v1/select``, ``/health``, ``/v1/models``), errors as 4xx JSON, an optional key;
* :mod:`meteora.server.batching`: the micro-batcher that turns concurrent requests into
  one :meth:`Reranker.rerank_batch <meteora.reranker.Reranker.rerank_batch>` call;
* :mod:`meteora.server.schemas`: request and response bodies;
* :mod:`meteora.server.settings`: limits and batching settings;
* :mod:`meteora.server.run`: the command's options, ``serve()``, and a background server.

This package imports neither FastAPI nor uvicorn; its modules do.

Example:
    >>> from meteora.server.settings import ServeSettings
    >>> ServeSettings().max_documents
    1000
"""
