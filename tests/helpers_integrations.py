"""Shared by the integration and service tests: a keyword-count encoder whose
embeddings have a known meaning (so which passage wins is known in advance), a toy
medical corpus, and a reranker on them (query-only, no scorer: no model download)."""

from __future__ import annotations

import threading

import numpy as np

VOCAB = ["aspirin", "stroke", "dog", "kidney", "insulin", "glucose", "fever", "child"]

CORPUS = [
    {"text": "Aspirin lowered the incidence of stroke; aspirin and stroke outcomes improved.", "doc_id": "A", "position": 0},
    {"text": "Dogs with kidney disease were treated with fluids.", "doc_id": "B", "position": 0},
    {"text": "Insulin and glucose levels in diabetic patients.", "doc_id": "C", "position": 0},
    {"text": "Fever in a child after vaccination.", "doc_id": "D", "position": 0},
    {"text": "Kidney function in dogs given insulin.", "doc_id": "E", "position": 0},
]
QUERY = "Does aspirin prevent stroke?"
BEST = 0  # index in CORPUS of the passage that answers QUERY


class KeywordModel:
    """A SentenceTransformer stand-in: an embedding counts keyword occurrences; it
    records the thread of every encode call."""

    def __init__(self) -> None:
        self.name_or_path = "keyword-model"
        self.max_seq_length = 512
        self.threads: list[int] = []
        self.texts: list[str] = []

    def get_embedding_dimension(self) -> int:
        return len(VOCAB) + 1

    def encode(self, texts, batch_size=32, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True):
        self.threads.append(threading.get_ident())
        self.texts.extend(texts)
        rows = [[float(t.lower().count(w)) for w in VOCAB] + [0.05] for t in texts]
        arr = np.asarray(rows, dtype=np.float32).reshape(len(texts), len(VOCAB) + 1)
        if normalize_embeddings:
            arr /= np.linalg.norm(arr, axis=1, keepdims=True)
        return arr


def keyword_reranker(**kwargs):
    """``Reranker(generator=None, scorer=None)`` on a fresh :class:`KeywordModel`
    encoder (``reranker.encoder.model`` is that model)."""
    from meteora.embeddings.encoder import Encoder
    from meteora.reranker import Reranker

    return Reranker(generator=None, scorer=None, encoder=Encoder(KeywordModel(), cache=None), **kwargs)


class FlagDogs:
    """A pool verifier stand-in: drops the passages about dogs, re-selects without them,
    and reports a conflict between the best passage and the dropped ones."""

    def verify_pool(self, view):
        from meteora.conflicts import Conflict
        from meteora.pool_stage import PoolVerification

        dogs = [p for p in view.candidates if "dog" in p.text.lower()]
        best = view.candidates[int(view.scores.argmax())]
        conflict = Conflict({"effect": [best.id], "no effect": [p.id for p in dogs]},
                            {"effect": [best.doc_id], "no effect": sorted({p.doc_id for p in dogs})},
                            kept=[best.id], dropped=[p.id for p in dogs], reason="about dogs")
        return PoolVerification.from_selection(view, view.reselect([p.id for p in dogs]),
                                               {p.id: "about dogs" for p in dogs}, conflicts=[conflict])
