"""Write rationales with a model served over an OpenAI-compatible HTTP API.

In production the rationale LM (e.g. Mistral-7B-Instruct with the med-rationale LoRA)
runs on a GPU server — vLLM, a llama.cpp server, Ollama, LM Studio or TGI — and the
reranker calls it over HTTP. Start a server, then:

    python examples/openai_server.py --base-url http://127.0.0.1:8000/v1 --model med-rationale \\
        --template med-rationale

Without ``--base-url`` the script exits with a message saying how to start one. No API
key is needed for local servers (``--api-key`` or ``$OPENAI_API_KEY`` when it is).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from meteora import MeteoraError, Reranker

PASSAGES = [
    "Results: low-dose aspirin reduced ischaemic stroke by 22% (RR 0.78, 95% CI 0.66-0.91).",
    "Major gastrointestinal bleeding was more frequent with aspirin (1.2% vs 0.7%).",
    "Statins lowered LDL cholesterol by 40% at one year.",
    "Cats with renal failure lived longer on a renal diet.",
]

HOW_TO_SERVE = """no --base-url given: point this example at an OpenAI-compatible server, e.g.
  vLLM:       vllm serve mistralai/Mistral-7B-Instruct-v0.3 --enable-lora \\
                --lora-modules med-rationale=chidiokoene/okoene-med-rationale
              then --base-url http://127.0.0.1:8000/v1 --model med-rationale --template med-rationale
  llama.cpp:  llama-server -m model.gguf --port 8080   then --base-url http://127.0.0.1:8080/v1"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=None, help="the server's API root, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="served model name (vLLM: the LoRA name)")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token, if the server needs one")
    parser.add_argument("--template", default=None, help="prompt template, e.g. med-rationale (default: chat)")
    parser.add_argument("--question", default="Does aspirin prevent stroke?")
    args = parser.parse_args()

    if not args.base_url:
        print(HOW_TO_SERVE, file=sys.stderr)
        return 2
    if importlib.util.find_spec("meteora.lm") is None:
        print("this meteora version has no generation backends (meteora.lm); upgrade meteora-rerank", file=sys.stderr)
        return 3

    from meteora.rationales import RationaleGenerator

    try:
        # backend="openai": nothing is loaded locally; generation is one HTTP request per query
        generator = RationaleGenerator.from_pretrained(
            args.model, backend="openai", base_url=args.base_url, api_key=args.api_key, template=args.template,
            cache=False,  # always ask the server in this example (default: a local rationale cache)
        )
        reranker = Reranker(generator=generator)
        result = reranker.rerank(args.question, PASSAGES)
    except MeteoraError as exc:  # refused connection, HTTP errors, timeouts: the message says what to do
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.explain())
    if result.fallback:
        print("(the server's answer held no usable rationale; the question was used instead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
