"""Call ``meteora serve`` over HTTP: the Cohere-style ``/v1/rerank`` and ``/v1/select``.

Start a server (``meteora serve --no-lm --port 8080``), then:

    python examples/serve_client.py --url http://127.0.0.1:8080

Without ``--url`` the script starts the same server itself, in-process on a free
loopback port (query-only reranker, packaged MiniLM), and stops it at the end. Needs the
``serve`` extra. Send ``--api-key`` (or ``$METEORA_SERVER_API_KEY``) when the server
wants one.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import httpx

DOCUMENTS = [
    "Results: low-dose aspirin reduced ischaemic stroke by 22% (RR 0.78, 95% CI 0.66-0.91).",
    "Major gastrointestinal bleeding was more frequent with aspirin (1.2% vs 0.7%).",
    "Statins lowered LDL cholesterol by 40% at one year.",
    "Cats with renal failure lived longer on a renal diet.",
]


def local_server():
    """A query-only server in this process (what ``meteora serve --no-lm`` runs)."""
    from meteora import Reranker
    from meteora.server.app import create_app
    from meteora.server.run import BackgroundServer

    return BackgroundServer(create_app(Reranker(generator=None)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a running server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("METEORA_SERVER_API_KEY"))
    parser.add_argument("--question", default="Does aspirin prevent stroke?")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(local_server()).url
        # the Cohere / Jina rerank request: existing clients send exactly this
        body = {"model": "meteora", "query": args.question, "documents": DOCUMENTS, "top_n": 3, "return_documents": True}
        reranked = httpx.post(f"{url}/v1/rerank", json=body, headers=headers, timeout=60).json()
        for r in reranked["results"]:
            mark = "*" if r["selected"] else " "
            print(f"{mark} [{r['index']}] {r['relevance_score']:.3f}  {r['document']['text']}")
        # METEORA's own answer: the selected set, rationales, a reason per passage
        chosen = httpx.post(f"{url}/v1/select", json={"query": args.question, "documents": DOCUMENTS},
                            headers=headers, timeout=60).json()
        print("rationales:", chosen["rationales"])
        for s in chosen["selected"]:
            print(f"[{s['index']}] {s['reason']}")


if __name__ == "__main__":
    main()
