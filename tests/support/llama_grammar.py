"""Ask llama.cpp's own grammar sampler about a GBNF text: whether it accepts the grammar, and
whether the grammar lets a given text through byte by byte."""

from __future__ import annotations

import ctypes

import llama_cpp
from llama_cpp import Llama


def accepted_by_llama_cpp(llm: Llama, gbnf: str) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def byte_tokens(llm: Llama, text: str) -> list[int]:
    """``text`` as the vocabulary's byte-fallback tokens (``<0x7B>``...): the SentencePiece
    tokenizer would prefix a space, which the grammar rightly refuses before the ``{``."""
    vocab = llm._model.vocab
    ids = {
        llama_cpp.llama_vocab_get_text(vocab, i): i
        for i in range(llama_cpp.llama_vocab_n_tokens(vocab))
    }
    return [ids[f"<0x{b:02X}>".encode()] for b in text.encode()]


def gbnf_accepts(llm: Llama, gbnf: str, text: str) -> bool:
    """Whether llama.cpp's grammar sampler lets ``text`` through, byte by byte, to the end."""
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
    assert sampler
    try:
        for token in byte_tokens(llm, text):
            data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
            array = llama_cpp.llama_token_data_array(data, 1, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            if data[0].logit == float("-inf"):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)
