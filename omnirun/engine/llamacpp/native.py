"""The GGUF tokenizer and chat template through llama.cpp, and the library's one-time setup."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


class GGUFTokenizer:
    """The GGUF file's own tokenizer and chat template, through llama.cpp (what the runner needs of one)."""

    def __init__(self, model: Any) -> None:
        import llama_cpp

        self._model = model
        self._llama_cpp = llama_cpp
        self.add_bos = bool(model.add_bos_token())
        self.eos_token_id = model.token_eos()
        self.eos_ids = {self.eos_token_id} if self.eos_token_id >= 0 else set()  # as Transformers stops
        self.template_text: str | None = None
        """The GGUF file's chat template as written (`chat_template` is it compiled)."""
        self.chat_template = self._chat_template()
        self._special: list[int] | None = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids; special tokens written in the text (`<|im_start|>`) are parsed as such."""
        return self._model.tokenize(text.encode("utf-8"), add_special_tokens and self.add_bos, True)

    def decode(self, tokens: list[int]) -> str:
        """Text of `tokens`, special tokens skipped."""
        return self._model.detokenize(tokens, special=False).decode("utf-8", errors="replace")

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def __len__(self) -> int:
        return int(self._model.n_vocab())

    @property
    def all_special_ids(self) -> list[int]:
        """Control and unknown tokens."""
        if self._special is None:
            lc = self._llama_cpp
            mask = lc.LLAMA_TOKEN_ATTR_CONTROL | lc.LLAMA_TOKEN_ATTR_UNKNOWN
            self._special = [t for t in range(len(self)) if self._model.token_get_attr(t) & mask]
        return self._special

    def _chat_template(self) -> Any:
        raw = self._llama_cpp.llama_model_chat_template(self._model.model, None)
        if not raw:
            return None
        self.template_text = raw.decode("utf-8")
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.template_text)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """Render like Transformers' `apply_chat_template(..., add_generation_prompt=True)`."""
        model = self._model
        bos = model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else ""
        eos = model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else ""
        return self.chat_template.render(messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)


_BACKEND_READY = False


def cpu_has_amx() -> bool:
    """Whether the CPU advertises AMX (Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "amx_tile" in line for line in f)
    except OSError:
        return False


def env_threads() -> int | None:
    """OMP_NUM_THREADS when set, as torch honours it too."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def init_llama_cpp() -> None:
    """Initialise llama.cpp's backend once, with its log (model loading chatter) limited to errors."""
    global _BACKEND_READY
    if _BACKEND_READY:
        return
    import llama_cpp
    from llama_cpp import _logger

    _logger.set_verbose(False)
    llama_cpp.llama_backend_init()
    _BACKEND_READY = True
