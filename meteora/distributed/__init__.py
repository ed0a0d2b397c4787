"""meteora on a Ray cluster, when one machine is not enough (extra ``distributed``).

* :func:`~meteora.distributed.build.build_index_on_ray`: the index build with Ray Data
  reading the corpus files and an actor pool of encoders (CPU or GPU) embedding it; the
  result equals :func:`meteora.retrievers.streaming.build_index` on the same corpus.
* :func:`~meteora.distributed.rerank.rerank_on_ray` /
  :func:`~meteora.distributed.rerank.rerank_dataset`: ``Reranker.search_batch`` over a
  Ray Dataset of queries in an actor pool (each actor holds a Reranker and the index),
  for offline evaluation or for preprocessing a query log; results equal the
  single-process ``search_batch``.
* :func:`~meteora.distributed.session.ray_session`: join a cluster by address, or start
  one on this machine.

The same command runs on a laptop (``address="local"``) and on a cluster
(``address="auto"`` on a node of it, or ``"ray://head:10001"``); see the README,
"Large corpora". Ray is imported only when one of these functions runs.
"""
