"""A llama.cpp context with its token batch, behind the few calls decoding needs: `fill`, `decode`, `logits`."""

from __future__ import annotations

from typing import Any

MAX_BATCH_TOKENS = 512
"""Prompt tokens per `llama_decode` call during prefill."""


class LlamaContextHandle:
    """Room for `sequences` sequences of up to `cells` KV cells each. Each sequence has its own KV cells (not
    one unified cache): with many sequences, attention then only reads a sequence's own cells (2.6x the
    tokens/s of a unified cache at 64)."""

    def __init__(self, model: Any, sequences: int, cells: int, threads: int | None) -> None:
        import llama_cpp
        from llama_cpp import _internals

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = cells * sequences
        params.n_batch = params.n_ubatch = MAX_BATCH_TOKENS
        params.n_seq_max = sequences
        params.kv_unified = False
        if threads:
            params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self.sequences, self.cells = sequences, cells
        self.n_vocab = int(model.n_vocab())
        self._ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=MAX_BATCH_TOKENS, embd=0, n_seq_max=1, verbose=False)

    def fits(self, sequences: int, per_sequence: int) -> bool:
        return sequences <= self.sequences and per_sequence <= self.cells

    def clear(self) -> None:
        """Forget every sequence (empty the KV cache)."""
        self._ctx.kv_cache_clear()

    def fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Put (token, position, sequence, wants logits) entries into the batch (at most MAX_BATCH_TOKENS)."""
        batch = self._batch.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits

    def decode(self) -> None:
        """Run the model over the filled batch."""
        self._ctx.decode(self._batch)

    def logits(self, rows: int) -> Any:
        """The logits of the last decode's `rows` entries that asked for them (a numpy view, rows x vocab)."""
        import numpy as np

        return np.ctypeslib.as_array(self._ctx.get_logits(), shape=(rows, self.n_vocab))

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()
