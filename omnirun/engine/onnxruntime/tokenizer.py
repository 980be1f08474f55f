"""A Hugging Face fast tokenizer read straight from its files (`tokenizer.json`, `tokenizer_config.json`, the chat
template) through the `tokenizers` library and jinja2, without importing Transformers (and torch, which its
tokenizer loading imports: ~3 s of a cached load). The same token ids and chat text as Transformers' fast
tokenizer for the same files (tests/unit/test_onnxruntime_backend.py compares them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL_KEYS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


class FastTokenizer:
    """What the runner needs of a tokenizer: `tok(text, add_special_tokens=...)["input_ids"]`, `decode`, `len()`,
    `all_special_ids`, `chat_template` and `apply_chat_template`."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_file = folder / "tokenizer_config.json"
        self.config: dict[str, Any] = json.loads(config_file.read_text()) if config_file.is_file() else {}
        template = folder / "chat_template.jinja"
        self.chat_template: str | None = template.read_text() if template.is_file() else None
        if self.chat_template is None and isinstance(self.config.get("chat_template"), str):
            self.chat_template = self.config["chat_template"]
        self.bos_token = token_text(self.config.get("bos_token"))
        self.eos_token = token_text(self.config.get("eos_token"))
        self._compiled: Any = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids; special tokens written in the text (`<|im_start|>`) are parsed as such."""
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return str(self._tok.decode(tokens, skip_special_tokens=skip_special_tokens))

    def __len__(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def all_special_ids(self) -> list[int]:
        """The tokens tokenizer_config.json names (bos, eos, unk, pad, ... and the additional ones), as
        Transformers lists them."""
        names = [token_text(self.config.get(f"{key}_token")) for key in SPECIAL_KEYS]
        for key in ("additional_special_tokens", "extra_special_tokens"):
            extra = self.config.get(key) or []
            names += [token_text(t) for t in (extra.values() if isinstance(extra, dict) else extra)]
        ids = [self._tok.token_to_id(name) for name in dict.fromkeys(n for n in names if n)]
        return [i for i in ids if i is not None]

    def apply_chat_template(
        self, messages: list[dict[str, str]], *, tokenize: bool = False, add_generation_prompt: bool = True
    ) -> str:
        """Render like Transformers' `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`."""
        if tokenize:
            raise ValueError("apply_chat_template: only tokenize=False is offered here; encode the text after")
        if self.chat_template is None:
            raise ValueError("the tokenizer has no chat template")
        if self._compiled is None:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise ValueError(message)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            env.globals["raise_exception"] = raise_exception
            self._compiled = env.from_string(self.chat_template)
        return str(
            self._compiled.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        )


def token_text(entry: Any) -> str:
    """A special token from tokenizer_config.json: a string, or an AddedToken dict with `content`."""
    if isinstance(entry, dict):
        return str(entry.get("content", ""))
    return str(entry) if entry else ""
