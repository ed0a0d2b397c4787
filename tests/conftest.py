"""Shared pytest fixtures. Tests never touch the network."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """Folder with a 2-layer random Llama causal LM and its tokenizer."""
    from tiny_models import make_causal_lm

    return make_causal_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory):
    """Folder with a 2-layer random Mistral causal LM and its tokenizer."""
    from tiny_models import make_causal_lm

    return make_causal_lm(tmp_path_factory.mktemp("tiny-mistral"), "mistral")


@pytest.fixture(scope="session")
def tiny_st_dir(tmp_path_factory):
    """Folder with a tiny random BERT sentence-transformers model (32-d)."""
    from tiny_models import make_sentence_transformer

    return make_sentence_transformer(tmp_path_factory.mktemp("tiny-st"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_st_dir):
    """A :class:`meteora.embeddings.Encoder` over the tiny BERT."""
    from meteora.embeddings.encoder import Encoder

    return Encoder(str(tiny_st_dir), device="cpu")
