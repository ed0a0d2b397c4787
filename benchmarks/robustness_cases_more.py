"""More rows of the bad-input matrix (:mod:`robustness_cases`): values that used to be
accepted silently or to end in a raw traceback.

* dense vectors: all-zero or NaN passage embeddings given to ``DenseRetriever.index`` /
  ``add``, NaN or zero query vectors to ``search_embeddings``, an index folder whose
  ``embeddings.npy`` is all NaN (or has a zero row) with checksums that match;
* text that is not valid Unicode: lone surrogates (``"aspirin \\ud800"``) in a query, a
  passage, an id, a rationale, a corpus file's JSON escape, a command-line argument;
* booleans where a count is meant: ``top_n=True`` in the framework integrations and over
  HTTP (``top_n``, ``top_k``, ``position``);
* the HTTP service's Cohere fields (``rank_fields``) and bad text, as 4xx answers;
* options checked at construction: unknown ``lm_options`` per backend, unknown
  ``reranker_kwargs``, a user generator whose ``generate`` lacks the reranker's
  parameters;
* model folders: a cross-encoder or embedding model passed as the rationale LM, and
  pickle weights (``pytorch_model.bin``, ``adapter_model.bin``) that meteora refuses to
  unpickle — each pickle here would create a marker file if it were ever loaded;
* BEIR qrels grades ``inf`` / ``1e400`` / ``nan`` / ``1.5``;
* a retriever re-indexed with a new corpus of the same size: neighbour expansion must
  read the new corpus, not the one the previous search saw.

Example:
    >>> len(more_cases()) > 40
    True
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from robustness_cases import (
    CORPUS,
    PASSAGES,
    Case,
    CliError,
    Env,
    HttpError,
    HttpResult,
    Q,
    cli,
    env_vars,
    fast,
)

from meteora.errors import IndexFormatError, InvalidInputError

__all__ = ["more_cases"]

SURROGATE = "aspirin \ud800"


# --------------------------------------------------------------------------- dense vectors
def _dense(env: Env) -> Any:
    from meteora.retrievers.dense import DenseRetriever

    return DenseRetriever(env.encoder)


def _tampered_embeddings(fill: Callable[[np.ndarray], None]) -> Callable[[Env], Any]:
    """Save a dense index, change its ``embeddings.npy`` with ``fill``, update the
    manifest's checksum to match (a careful forger, or a bug upstream), then load it."""

    def action(env: Env) -> Any:
        from meteora.retrievers.base import load_retriever

        out = env.fresh("ix") / "index"
        env.dense.save(out)
        for npy in out.rglob("embeddings.npy"):
            arr = np.load(npy)
            fill(arr)
            np.save(npy, arr)
            manifest = npy.parent / "manifest.json"
            data = json.loads(manifest.read_text(encoding="utf-8"))
            data["files"]["embeddings.npy"] = {"sha256": hashlib.sha256(npy.read_bytes()).hexdigest(),
                                               "bytes": npy.stat().st_size}
            manifest.write_text(json.dumps(data), encoding="utf-8")
        return load_retriever(out, encoder=env.encoder).search(Q, k=1)

    return action


def _zero_row(arr: np.ndarray) -> None:
    arr[1] = 0.0


def _dense_cases() -> list[Case]:
    def dim(env: Env) -> int:
        return env.encoder.dim

    def given(make: Callable[[Env], np.ndarray]) -> Callable[[Env], Any]:
        return lambda env: _dense(env).index(CORPUS, embeddings=make(env))

    def one_zero(env: Env) -> np.ndarray:
        emb = np.random.default_rng(0).normal(size=(len(CORPUS), dim(env)))
        emb[2] = 0.0
        return emb

    def query(make: Callable[[Env], np.ndarray]) -> Callable[[Env], Any]:
        return lambda env: env.dense.search_embeddings(make(env), k=2)

    g = "embeddings"
    return [
        Case("embeddings/dense.index/all-zero-rows", g, given(lambda env: np.zeros((len(CORPUS), dim(env)))),
             InvalidInputError, "row 0 is all zeros"),
        Case("embeddings/dense.index/one-zero-row", g, given(one_zero), InvalidInputError, "row 2 is all zeros"),
        Case("embeddings/dense.index/nan", g, given(lambda env: np.full((len(CORPUS), dim(env)), np.nan)),
             InvalidInputError, "NaN"),
        Case("embeddings/dense.add/zero-rows", g,
             lambda env: _dense(env).index(CORPUS[:2]).add(CORPUS[2:4], embeddings=np.zeros((2, dim(env)))),
             InvalidInputError, "all zeros"),
        Case("embeddings/dense.search_embeddings/nan", g, query(lambda env: np.full((1, dim(env)), np.nan)),
             InvalidInputError, "query vectors: row 0 holds NaN"),
        Case("embeddings/dense.search_embeddings/inf", g, query(lambda env: np.full((2, dim(env)), np.inf)),
             InvalidInputError, "NaN or infinite"),
        Case("embeddings/dense.search_embeddings/zero", g, query(lambda env: np.zeros((1, dim(env)))),
             InvalidInputError, "all zeros"),
        Case("embeddings/dense.search_embeddings/ok", g, query(lambda env: env.qemb()[None, :]), None,
             check=lambda r, e: r[0][0].id == "d0-0" and np.isfinite(r[0].scores).all()),
        Case("index/dense-embeddings-all-nan-checksum-matches", "index/cache",
             _tampered_embeddings(lambda a: a.fill(np.nan)), IndexFormatError, "embeddings.npy: row 0 holds NaN"),
        Case("index/dense-embeddings-zero-row-checksum-matches", "index/cache", _tampered_embeddings(_zero_row),
             IndexFormatError, "row 1 is all zeros"),
    ]


# --------------------------------------------------------------------------- text
def _text_cases() -> list[Case]:
    from meteora.corpus import read_passages

    return [
        Case("query/lone-surrogate", "query", lambda env: env.rr.rerank(SURROGATE, PASSAGES), InvalidInputError,
             "query holds a lone surrogate (U+D800"),
        Case("query/lone-low-surrogate-batch", "query",
             lambda env: env.rr.rerank_batch([Q, "fever \udc80"], [PASSAGES, PASSAGES]), InvalidInputError,
             "queries[1] holds a lone surrogate (U+DC80"),
        Case("query/lone-surrogate-search", "query", lambda env: env.rr.search(SURROGATE, env.bm25, k=2),
             InvalidInputError, "lone surrogate"),
        Case("passage/str/lone-surrogate", "passage", lambda env: env.rr.rerank(Q, [PASSAGES[0], SURROGATE]),
             InvalidInputError, "passage #1: the text of passage '1' holds a lone surrogate"),
        Case("passage/dict/id-lone-surrogate", "passage",
             lambda env: env.rr.rerank(Q, [{"id": "a\ud800", "text": "x"}]), InvalidInputError, "lone surrogate"),
        Case("passage/bm25.index/lone-surrogate", "retriever", lambda env: _bm25_index([Q, SURROGATE]),
             InvalidInputError, "passage #1"),
        Case("batch/rationales-lone-surrogate", "batch",
             lambda env: env.rr.rerank_batch([Q], [PASSAGES], rationales=[["look for \udfff trials"]]),
             InvalidInputError, "rationales[0][0] holds a lone surrogate"),
        Case("corpus/jsonl-surrogate-escape", "corpus",
             lambda env: read_passages(env.file("p.jsonl", '{"text": "ok"}\n{"text": "x \\ud800"}\n')),
             InvalidInputError, "p.jsonl:2"),
        Case("corpus/json-string-surrogate-escape", "corpus",
             lambda env: read_passages(env.file("p.json", '["ok", "x \\udc00"]')), InvalidInputError, "item #1"),
        Case("cli/rerank/query-undecodable-argument", "cli",  # what Python makes of a non-UTF-8 argv byte
             lambda env: cli("rerank", "--query", "aspirin \udcff", "--passages", str(env.file("p.txt", "a\nb\n")),
                             "--no-lm", "--scorer", "none", "--embedding-model", str(env.encoder_dir)),
             CliError, "lone surrogate (U+DCFF"),
        Case("query/ok-astral-emoji", "query", lambda env: env.rr.rerank("aspirin \U0001F48A for fever?", PASSAGES),
             None, check=lambda r, e: len(r.ranked) == 3),
    ]


def _bm25_index(texts: list[str]) -> Any:
    from meteora.retrievers.bm25 import BM25Retriever

    return BM25Retriever().index(texts)


# --------------------------------------------------------------------------- HTTP
def _http(body: dict[str, Any], path: str = "/v1/rerank") -> Callable[[Env], HttpResult]:
    """POST ``body`` (JSON, ASCII: a lone surrogate travels as its escape) to a fresh
    service on the query-only reranker, on 127.0.0.1."""

    def action(env: Env) -> HttpResult:
        import httpx

        from meteora.server.app import create_app
        from meteora.server.run import BackgroundServer

        with BackgroundServer(create_app(env.rr)) as server:
            resp = httpx.post(server.url + path, content=json.dumps(body), timeout=60,
                              headers={"content-type": "application/json"})
        return HttpResult(resp.status_code, resp.json())

    return action


def _http_cases() -> list[Case]:
    g = "http"
    docs = list(PASSAGES)
    return [
        Case("http/v1-rerank/top_n=true", g, _http({"query": Q, "documents": docs, "top_n": True}), HttpError,
             "422: top_n: Value error, must be an integer, not true"),
        Case("http/v1-rerank/top_n=false", g, _http({"query": Q, "documents": docs, "top_n": False}), HttpError,
             "top_n"),
        Case("http/v1-select/top_k=true", g, _http({"query": Q, "documents": docs, "top_k": True}, "/v1/select"),
             HttpError, "top_k"),
        Case("http/v1-select/position=true", g,
             _http({"query": Q, "documents": [{"text": "x", "position": True}]}, "/v1/select"), HttpError,
             "position"),
        Case("http/v1-rerank/query-lone-surrogate", g, _http({"query": SURROGATE, "documents": docs}), HttpError,
             "422: query holds a lone surrogate"),
        Case("http/v1-rerank/document-lone-surrogate", g, _http({"query": Q, "documents": ["ok", SURROGATE]}),
             HttpError, "422: documents[1]: the text of passage '1' holds a lone surrogate"),
        Case("http/rerank-tei/text-lone-surrogate", g, _http({"query": Q, "texts": ["ok", SURROGATE]}, "/rerank"),
             HttpError, "documents[1]"),
        Case("http/v1-rerank/rank_fields-missing", g,
             _http({"query": Q, "documents": [{"title": "t"}], "rank_fields": ["title", "body"]}), HttpError,
             "documents[0] has no field 'body'"),
        Case("http/v1-rerank/no-text", g, _http({"query": Q, "documents": [{"title": "t"}]}), HttpError,
             "documents[0] has no 'text'"),
        Case("http/v1-rerank/max_tokens_per_doc=0", g,
             _http({"query": Q, "documents": docs, "max_tokens_per_doc": 0}), HttpError, "max_tokens_per_doc"),
        Case("http/v1-rerank/ok-relevance-in-0-1", g, _http({"query": Q, "documents": docs, "top_n": 2}), None,
             check=lambda r, e: r.status == 200 and len(r.body["results"]) == 2
             and all(0.0 <= x["relevance_score"] <= 1.0 for x in r.body["results"])
             and r.body["results"][0]["index"] == 0),
    ]


# --------------------------------------------------------------------------- integrations
def _integration_cases() -> list[Case]:
    g = "integrations"

    def langchain(**kw: Any) -> Callable[[Env], Any]:
        def action(env: Env) -> Any:
            from meteora.integrations.langchain import MeteoraCompressor

            kw.setdefault("reranker", None if "reranker_kwargs" in kw else env.rr)
            return MeteoraCompressor(**kw)

        return action

    def llamaindex(**kw: Any) -> Callable[[Env], Any]:
        def action(env: Env) -> Any:
            from meteora.integrations.llamaindex import MeteoraPostprocessor

            kw.setdefault("reranker", None if "reranker_kwargs" in kw else env.rr)
            return MeteoraPostprocessor(**kw)

        return action

    return [
        Case("integrations/langchain/top_n=true", g, langchain(top_n=True), InvalidInputError, "top_n must be"),
        Case("integrations/langchain/top_n=false", g, langchain(top_n=False), InvalidInputError, "top_n must be"),
        Case("integrations/langchain/reranker_kwargs-unknown", g,
             langchain(reranker_kwargs={"generator": None, "scorrer": None}), InvalidInputError,
             "unknown reranker_kwargs ['scorrer']"),
        Case("integrations/llamaindex/top_n=true", g, llamaindex(top_n=True), InvalidInputError, "top_n must be"),
        Case("integrations/llamaindex/reranker_kwargs-unknown", g, llamaindex(reranker_kwargs={"k": 3}),
             InvalidInputError, "unknown reranker_kwargs ['k']"),
        Case("integrations/langchain/ok-default-top_n", g, langchain(), None, check=lambda c, e: c.top_n == 3),
        Case("integrations/llamaindex/ok-default-top_n", g, llamaindex(), None, check=lambda c, e: c.top_n == 2),
    ]


# --------------------------------------------------------------------------- construction-time options
class _NoParams:
    """A user generator whose ``generate`` takes only the queries."""

    def generate(self, queries: Any) -> Any:
        return []


class _NoIncludeQuery:
    def generate(self, queries: Any, n: Any = None, *, batch_size: int = 8) -> Any:
        return []


class _AnyOptions:
    def generate(self, queries: Any, **options: Any) -> Any:
        from meteora.rationales.rationale_set import RationaleSet

        return [RationaleSet(query=q, rationales=["look for trials of aspirin"]) for q in queries]


def _options_cases() -> list[Case]:
    def lm(backend: str, options: dict[str, Any], model: str | None = "served-model") -> Callable[[Env], Any]:
        def action(env: Env) -> Any:
            from meteora.rationales.generator import RationaleGenerator

            url = "http://127.0.0.1:9/v1" if backend == "openai" else None
            return fast(5, lambda: RationaleGenerator.from_pretrained(
                model if backend != "transformers" else str(env.llama_dir), backend=backend, base_url=url,
                cache=None, lm_options=options))

        return action

    g = "generator"
    return [
        Case("generator/lm_options/openai-typo", g, lm("openai", {"tmeout": 3}), InvalidInputError,
             "unknown lm_options ['tmeout'] for backend 'openai'"),
        Case("generator/lm_options/openai-llamacpp-option", g, lm("openai", {"n_ctx": 2048}), InvalidInputError,
             "n_ctx"),
        Case("generator/lm_options/openai-api_key-twice", g, lm("openai", {"api_key": "x"}), InvalidInputError,
             "api_key has its own argument"),
        Case("generator/lm_options/llamacpp-typo", g, lm("llamacpp", {"n_thread": 2}, None), InvalidInputError,
             "unknown lm_options ['n_thread'] for backend 'llamacpp'"),
        Case("generator/lm_options/transformers-typo", g, lm("transformers", {"batchsize": 2}), InvalidInputError,
             "unknown lm_options ['batchsize'] for backend 'transformers'"),
        Case("generator/signature/no-parameters", g, lambda env: env.reranker(generator=_NoParams()),
             InvalidInputError, "does not take n, batch_size, include_query"),
        Case("generator/signature/no-include_query", g, lambda env: env.reranker(generator=_NoIncludeQuery()),
             InvalidInputError, "does not take include_query"),
        Case("generator/signature/generation-option-not-taken", g,
             lambda env: env.reranker(generator=_NoIncludeQuery(), include_query=False, generation={"seed": 1}),
             InvalidInputError, "seed"),
        Case("generator/signature/ok-kwargs", g, lambda env: env.reranker(generator=_AnyOptions()).rerank(Q, PASSAGES),
             None, check=lambda r, e: r.rationales == [Q, "look for trials of aspirin"]
             or r.rationales == ["look for trials of aspirin"]),
    ]


# --------------------------------------------------------------------------- model folders
class _Touch:
    """Unpickling this creates ``marker``: proof that a file was (or was not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def _pickle_weights(folder: Path, name: str) -> Path:
    marker = folder.parent / f"{folder.name}-was-unpickled"
    (folder / name).write_bytes(pickle.dumps({"weight": _Touch(marker)}))
    return marker


Made = tuple[Path, Callable[[Path], Any], Path]  # the folder, how to load it, the pickle's marker


def _never_unpickled(make: Callable[[Env], Made]) -> Callable[[Env], Any]:
    """Build a folder holding a pickle, load it, and fail loudly if the pickle ran."""

    def action(env: Env) -> Any:
        folder, load, marker = make(env)
        try:
            return load(folder)
        finally:
            if marker.exists():
                raise RuntimeError(f"a pickle in {folder} was unpickled")

    return action


def _llama_with_bin(env: Env) -> Made:
    folder = env.fresh("llama-bin") / "model"
    shutil.copytree(env.llama_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder, lambda p: env.reranker(generator=str(p)), _pickle_weights(folder, "pytorch_model.bin")


def _adapter_with_bin(env: Env) -> Made:
    from meteora.rationales.generator import RationaleGenerator

    folder = env.fresh("adapter-bin") / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"],
                                                            "base_model_name_or_path": str(env.llama_dir)}))
    marker = _pickle_weights(folder, "adapter_model.bin")
    return folder, lambda p: RationaleGenerator.from_pretrained(str(env.llama_dir), str(p), backend="transformers",
                                                                 cache=None), marker


def _encoder_with_bin(env: Env) -> Made:
    from meteora.embeddings.encoder import Encoder

    folder = env.fresh("st-bin") / "encoder"
    shutil.copytree(env.encoder_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder, lambda p: Encoder(str(p), device="cpu"), _pickle_weights(folder, "pytorch_model.bin")


def _st_module_with_bin(env: Env) -> Made:
    """A sentence-transformers folder whose weights are safetensors but whose Dense module
    (``2_Dense/``, as older versions saved it) is a pickle."""
    from meteora.embeddings.encoder import Encoder

    folder = env.fresh("st-dense-bin") / "encoder"
    shutil.copytree(env.encoder_dir, folder)
    (folder / "2_Dense").mkdir()
    return folder, lambda p: Encoder(str(p), device="cpu"), _pickle_weights(folder / "2_Dense", "pytorch_model.bin")


def _scorer_with_bin(env: Env) -> Made:
    from meteora.scorer import EvidenceScorer

    folder = env.fresh("scorer-bin") / "scorer"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    marker = _pickle_weights(folder, "adapter_model.bin")
    return folder, lambda p: EvidenceScorer(str(p), base=str(env.encoder_dir), device="cpu"), marker


def _config_folder(env: Env, name: str, architectures: list[str], extra: tuple[str, ...] = ()) -> Path:
    folder = env.fresh(name) / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": architectures, "model_type": "bert"}))
    for file in extra:
        (folder / file).write_text("[]")
    return folder


def _model_cases() -> list[Case]:
    g = "hub"

    def as_generator(make: Callable[[Env], str]) -> Callable[[Env], Any]:
        def action(env: Env) -> Any:
            name, _ = make(env), env.encoder  # the shared fixtures are built outside the timed part
            return _with_offline(lambda: fast(5, lambda: env.reranker(generator=name)))

        return action

    return [
        Case("hub/pickle/generator-pytorch_model.bin", g, _never_unpickled(_llama_with_bin), InvalidInputError,
             "meteora loads weights only from .safetensors"),
        Case("hub/pickle/adapter_model.bin", g, _never_unpickled(_adapter_with_bin), InvalidInputError,
             "adapter_model.safetensors"),
        Case("hub/pickle/encoder-pytorch_model.bin", g, _never_unpickled(_encoder_with_bin), InvalidInputError,
             "model.safetensors"),
        Case("hub/pickle/encoder-module-subfolder", g, _never_unpickled(_st_module_with_bin), InvalidInputError,
             "2_Dense"),
        Case("hub/pickle/scorer-adapter_model.bin", g, _never_unpickled(_scorer_with_bin), InvalidInputError,
             "scorer adapter"),
        Case("hub/role/cross-encoder-folder-as-generator", g,
             as_generator(lambda env: str(_config_folder(env, "ce", ["BertForSequenceClassification"]))),
             InvalidInputError, "is a cross-encoder (reranker)"),
        Case("hub/role/embedding-folder-as-generator", g, as_generator(lambda env: str(env.encoder_dir)),
             InvalidInputError, "is an embedding model"),
        Case("hub/role/encoder-only-folder-as-generator", g,
             as_generator(lambda env: str(_config_folder(env, "bert", ["BertModel"]))), InvalidInputError,
             "without a language-model head"),
        Case("hub/role/cross-encoder-hub-id-as-generator", g,
             as_generator(lambda env: "cross-encoder/ms-marco-MiniLM-L-6-v2"), InvalidInputError,
             "rationale generator"),
        Case("hub/role/sentence-transformers-hub-id-as-generator", g,
             as_generator(lambda env: "sentence-transformers/all-MiniLM-L6-v2"), InvalidInputError,
             "an embedding model"),
    ]


def _with_offline(fn: Callable[[], Any]) -> Any:
    with env_vars(HF_HUB_OFFLINE="1"):
        return fn()


# --------------------------------------------------------------------------- BEIR qrels
def _beir(score: str) -> Callable[[Env], Any]:
    def action(env: Env) -> Any:
        from meteora.datasets.beir import build_beir_benchmark

        root = env.fresh("beir")
        (root / "corpus.jsonl").write_text('{"_id": "p1", "text": "Aspirin."}\n{"_id": "p2", "text": "Dogs."}\n')
        (root / "queries.jsonl").write_text('{"_id": "q1", "text": "Aspirin?"}\n')
        (root / "qrels").mkdir()
        (root / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\tp1\t1\nq1\tp2\t{score}\n")
        return build_beir_benchmark(root)

    return action


def _qrels_cases() -> list[Case]:
    out = [Case(f"corpus/beir-qrels-score={label}", "corpus", _beir(score), InvalidInputError, "test.tsv:3: score")
           for label, score in {"inf": "inf", "1e400": "1e400", "-inf": "-inf", "nan": "nan", "1.5": "1.5"}.items()]
    out.append(Case("corpus/beir-qrels-ok-integral-float", "corpus", _beir("2.0"), None,
                    check=lambda b, e: b.qrels_for("evidence") == {"q1": {"p1": 1, "p2": 2}}))
    return out


def _reindexed_search(env: Env) -> Any:
    """Search with neighbour expansion, re-index the same retriever with a corpus of the
    same size (same ids, documents and positions, new texts), search again."""
    from meteora import Reranker
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.selection.selector_settings import SelectorSettings

    rr = Reranker(generator=None, encoder=env.encoder, scorer=None, settings=SelectorSettings(window=2))
    retriever = BM25Retriever().index(CORPUS)
    rr.search(Q, retriever, k=3)
    retriever.index([{**p, "text": "renewed: " + p["text"]} for p in CORPUS])
    return rr.search(Q, retriever, k=3)


def _expanded_from_the_new_corpus(result: Any, env: Env) -> bool:
    expanded = [p for p in result.selected if p.id not in {h.id for h in result.ranked}]
    return bool(expanded) and all(p.text.startswith("renewed: ") for p in result.selected)


def _reindex_cases() -> list[Case]:
    return [Case("retriever/reindex-same-size/expansion-reads-new-corpus", "retriever", _reindexed_search, None,
                 check=_expanded_from_the_new_corpus)]


def more_cases() -> list[Case]:
    """Every row of this module."""
    return [*_dense_cases(), *_text_cases(), *_http_cases(), *_integration_cases(), *_options_cases(),
            *_model_cases(), *_qrels_cases(), *_reindex_cases()]
