"""Whether any text at all satisfies a compiled format (`structured.compile_problem` refuses one that none
does, such as the regex `[^\\s\\S]`, before a model loads, instead of generating "" with finish_reason `stop`).

The search runs llguidance's own matcher over a byte-level vocabulary (`byte_tokenizer`, also a small tokenizer
for tests of the constrained decoder), so it decides exactly what the decoder would allow.
"""

from __future__ import annotations

import functools
from typing import Any

SEARCH_STATES = 4096
"""How many prefixes `never_matches` may make before it gives up (and lets the format through)."""


def never_matches(compiled: str) -> bool:
    """Whether no text at all satisfies the grammar `compiled` (a regex such as `[^\\s\\S]`, or `a` followed by
    one): a depth-first search over byte prefixes, through llguidance's own matcher on a byte-level vocabulary,
    for a prefix the grammar accepts. True only when every branch died; a grammar too wide to exhaust within
    SEARCH_STATES prefixes counts as satisfiable (`\\w+[^\\s\\S]` is not caught: its first part never ends)."""
    import numpy as np
    from llguidance import LLMatcher

    stack = [LLMatcher(byte_tokenizer(), compiled, log_level=0)]
    words = (BYTE_EOS + 1 + 31) // 32
    made = 1
    while stack:
        matcher = stack.pop()
        if matcher.is_error():
            continue
        if matcher.is_accepting():
            return False
        bits = np.zeros(words, dtype=np.int32)
        matcher.unsafe_compute_mask_ptr(bits.ctypes.data, words * 4)
        allowed = np.flatnonzero(np.unpackbits(bits.view(np.uint8), bitorder="little")[:BYTE_EOS])
        made += len(allowed)
        if made > SEARCH_STATES:
            return False  # too wide to exhaust: assume some text satisfies it
        for byte in allowed[::-1]:  # the lowest byte is explored first
            child = matcher.deep_copy()
            if child.consume_token(int(byte)):
                stack.append(child)
    return True


BYTE_EOS = 256
"""The end-of-sequence id of `byte_tokenizer` (ids 0-255 are the bytes)."""


@functools.cache
def byte_tokenizer() -> Any:
    """An llguidance tokenizer whose tokens are the 256 bytes and an end-of-sequence token."""
    from llguidance import LLTokenizer, TokenizerWrapper

    class Bytes:
        eos_token_id, bos_token_id = BYTE_EOS, None

        def __init__(self) -> None:
            self.tokens = [bytes([i]) for i in range(256)] + [b"</s>"]
            self.special_token_ids = [BYTE_EOS]

        def __call__(self, text: str | bytes) -> list[int]:
            return list(text.encode() if isinstance(text, str) else text)

    return LLTokenizer(TokenizerWrapper(Bytes()))
