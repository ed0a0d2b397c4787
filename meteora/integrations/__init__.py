"""Framework integrations and the per-passage notes they share.

* :mod:`meteora.integrations.langchain`: :class:`MeteoraCompressor`, a LangChain
  ``BaseDocumentCompressor`` (extra ``langchain``);
* :mod:`meteora.integrations.llamaindex`: :class:`MeteoraPostprocessor`, a LlamaIndex
  ``BaseNodePostprocessor`` (extra ``llamaindex``);
* :mod:`meteora.integrations.annotate`: score, rank, selection flag and reason of each
  candidate (also used by the HTTP service, :mod:`meteora.server`);
* :mod:`meteora.integrations.runner`: the lazily built, locked reranker behind both.

Import the framework modules directly; this package imports no framework.

Example:
    >>> from meteora.integrations.annotate import MODES
    >>> MODES
    ('select', 'rank')
"""
