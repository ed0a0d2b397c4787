"""Index a JSONL corpus (BM25 + dense + hybrid fusion), then search and select evidence.

Writes a small 20-passage corpus to a temporary folder (or reads ``--corpus``), builds
a hybrid retriever with :mod:`meteora.retrievers`, saves and reloads it, and lets a
query-only :class:`meteora.Reranker` select the evidence among the top candidates.

    python examples/index_and_search.py
    python examples/index_and_search.py --corpus my_passages.jsonl --question "..."
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from meteora import Reranker, SelectorSettings
from meteora.corpus import read_passages
from meteora.retrievers import BM25Retriever, DenseRetriever, HybridRetriever, load_retriever

# Three short "abstracts" split into chunks: doc_id + position let selection add the
# neighbours of a chosen chunk (the expansion window).
DOCS = {
    "aspirin": [
        "Background: stroke is a leading cause of death and disability in older adults.",
        "Methods: 3,000 adults were randomised to low-dose aspirin or placebo for five years.",
        "Results: aspirin reduced ischaemic stroke by 22% (RR 0.78, 95% CI 0.66-0.91).",
        "Major gastrointestinal bleeding was more frequent with aspirin (1.2% vs 0.7%).",
        "Conclusions: aspirin prevents stroke at the cost of more bleeding.",
    ],
    "statins": [
        "Background: LDL cholesterol is a causal risk factor for myocardial infarction.",
        "Methods: a meta-analysis of 26 randomised trials of statin therapy.",
        "Results: each 1 mmol/L LDL reduction cut major vascular events by 21%.",
        "Muscle symptoms were reported equally often with statin and placebo.",
        "Conclusions: statins reduce heart attacks in proportion to LDL lowering.",
    ],
    "asthma": [
        "Background: asthma exacerbations in children often follow viral infections.",
        "Methods: a retrospective cohort of 1,024 children treated for asthma.",
        "Results: inhaled corticosteroids halved emergency visits (OR 0.51).",
        "Growth velocity was slightly lower in the first year of treatment.",
        "Conclusions: inhaled corticosteroids prevent severe asthma attacks.",
    ],
    "renal": [
        "Background: chronic kidney disease is common in elderly cats.",
        "Methods: 120 cats with renal failure received a renal diet or a standard diet.",
        "Results: the renal diet prolonged median survival from 264 to 633 days.",
        "Owners reported better appetite with the renal diet.",
        "Conclusions: renal diets extend survival of cats with kidney disease.",
    ],
}


def write_corpus(path: Path) -> Path:
    """One JSON object per line: id, doc_id, position, text (20 lines)."""
    with open(path, "w", encoding="utf-8") as fh:
        for doc_id, chunks in DOCS.items():
            for position, text in enumerate(chunks):
                row = {"id": f"{doc_id}-{position}", "doc_id": doc_id, "position": position, "text": text}
                fh.write(json.dumps(row) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=None, help="a JSONL corpus (default: a built-in 20-line one)")
    parser.add_argument("--question", default="Does aspirin prevent stroke, and what are the harms?")
    parser.add_argument("-k", type=int, default=10, help="candidates retrieved before selection")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="meteora-example-") as tmp:
        corpus_file = args.corpus or write_corpus(Path(tmp) / "corpus.jsonl")
        passages = read_passages(corpus_file)
        print(f"read {len(passages)} passages from {corpus_file.name}")

        # BM25 (lexical) + dense (MiniLM embeddings) fused by reciprocal rank fusion
        dense = DenseRetriever()  # the packaged all-MiniLM-L6-v2
        hybrid = HybridRetriever([BM25Retriever(), dense], fusion="rrf").index(passages)

        # an index is a folder: save it once, load it in the serving process (passing
        # the encoder we already have instead of loading the model a second time)
        hybrid.save(Path(tmp) / "index")
        encoder = dense.encoder
        hybrid = load_retriever(Path(tmp) / "index", encoder=encoder)

        # plain retrieval: the top k
        print("\nhybrid top 5:")
        for hit in hybrid.search(args.question, k=5):
            print(f"  {hit.score:.4f}  {hit.id}: {hit.passage.text}")

        # selection: search() retrieves k candidates, reuses the dense index's stored
        # embeddings (no re-encoding), picks the evidence and adds neighbours (window=1)
        reranker = Reranker(generator=None, encoder=encoder, settings=SelectorSettings(window=1))
        result = reranker.search(args.question, hybrid, k=args.k)
        print(f"\nselected {len(result.selected)} of {len(result.ranked)} candidates:")
        for passage in result.selected:
            print(f"  {passage.id}: {passage.text}")


if __name__ == "__main__":
    main()
