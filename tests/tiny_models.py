"""Tiny random models with a tokenizer trained in-process: no network, no hub, a second or two each.

`build_tiny(kind, path)` saves a model (safetensors) and its tokenizer into `path` and returns it, so tests
and benchmarks can load it with `TransformersEngine(str(path))` like any local model folder.

Kinds: `llama` (decoder-only, has a chat template), `gpt2` (decoder-only, no chat template), `t5`
(encoder-decoder) and `llama-big` (the llama architecture at ~28M parameters, ~110 MB of fp32 weights,
for memory measurements).

`build_family(family, path, generation={...})` does the same for each architecture family the engine supports
(`FAMILIES`: gpt2, gpt-neo, gpt-j, llama, qwen2, qwen3, mistral, phi, phi3, gemma, falcon, opt, bloom, t5,
mt5, bart), with optional values for the saved generation_config.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
VOCAB_SIZE = 400
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}" + EOS + "\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
KINDS = ("llama", "gpt2", "t5", "llama-big")

_WORDS = (  # noqa: SIM905 (a paragraph reads better than a list of 120 words)
    "the quick brown fox jumps over a lazy dog while seven small models run their tests on two cores "
    "tokens are counted batches are padded on the left and every answer streams one piece at a time "
    "what is the capital of france paris is the capital of france and berlin is the capital of germany "
    "hello world this is a tiny corpus for a byte level tokenizer that knows a few hundred words at most "
    "numbers one two three four five six seven eight nine ten eleven twelve hundred thousand million "
    "question answer summary translate english german french story once upon a time there was a king "
    "config runner inference engine device dtype memory cache weights layers heads hidden vocabulary "
).split()


def corpus() -> list[str]:
    """A few hundred deterministic sentences over a small vocabulary, with punctuation and digits."""
    lines = []
    n = len(_WORDS)
    for i in range(300):
        words = [_WORDS[(i * 7 + j * 13) % n] for j in range(5 + i % 9)]
        lines.append(" ".join(words).capitalize() + (". " if i % 3 else "? ") + str(i))
    return lines


@functools.lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok.to_str()


def build_tokenizer(chat_template: str | None = None) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` (pad=0, bos=1, eos=2, unk=3), trained on `corpus()`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def _config(kind: str, tokenizer: Any, overrides: dict[str, Any]) -> Any:
    import transformers

    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if kind in ("llama", "llama-big"):
        size: dict[str, Any] = (
            {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 4, "num_attention_heads": 8}
            if kind == "llama-big"
            else {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
        )
        kwargs: dict[str, Any] = {
            **size,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "tie_word_embeddings": False,
        }
        return transformers.LlamaConfig(**ids, **{**kwargs, **overrides})
    if kind == "gpt2":
        kwargs = {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512}
        return transformers.GPT2Config(**ids, **{**kwargs, **overrides})
    if kind == "t5":
        size = {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}
        # with the default init (factor 1.0) the random T5 decodes nothing but <pad>, i.e. empty text
        kwargs = {**size, "initializer_factor": 10.0}
        start: dict[str, Any] = {"decoder_start_token_id": tokenizer.pad_token_id}
        return transformers.T5Config(**ids, **start, **{**kwargs, **overrides})
    raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(KINDS)}")


def build_tiny(kind: str, path: str | Path, seed: int = 0, chat_template: str | None = None, **overrides: Any) -> Path:
    """Save a random `kind` model (safetensors) and its tokenizer into `path`; return the folder.

    `overrides` replace config values (e.g. `hidden_size=128`); `chat_template` replaces the llama kinds'
    template (or gives one to the others).
    """
    import torch
    import transformers

    path = Path(path)
    tokenizer = build_tokenizer(chat_template or (CHAT_TEMPLATE if kind.startswith("llama") else None))
    config = _config(kind, tokenizer, overrides)
    auto = transformers.AutoModelForSeq2SeqLM if kind == "t5" else transformers.AutoModelForCausalLM
    torch.manual_seed(seed)
    model = auto.from_config(config)  # LlamaForCausalLM, GPT2LMHeadModel or T5ForConditionalGeneration
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = config.bos_token_id, config.eos_token_id, config.pad_token_id
    if kind == "t5":
        gen.decoder_start_token_id = config.decoder_start_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


# ----------------------------------------------------------------------------------- one model per family
# Every architecture family the engine supports, tiny and random: (config class, size and family-specific
# values, whether it is encoder-decoder). Hidden 64, 2 layers, 4 heads, the 400-token in-process tokenizer.
_DECODER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
_T5 = {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}
FAMILIES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "gpt2": ("GPT2Config", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512}, False),
    "gpt-neo": (
        "GPTNeoConfig",
        {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "attention_types": [[["global", "local"], 1]]},
        False,
    ),
    "gpt-j": ("GPTJConfig", {"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8, "n_positions": 512}, False),
    "llama": ("LlamaConfig", {**_DECODER, "num_key_value_heads": 2, "tie_word_embeddings": False}, False),
    "qwen2": ("Qwen2Config", {**_DECODER, "num_key_value_heads": 2}, False),
    "qwen3": ("Qwen3Config", {**_DECODER, "num_key_value_heads": 2, "head_dim": 16}, False),
    "mistral": ("MistralConfig", {**_DECODER, "num_key_value_heads": 2, "head_dim": 16}, False),
    "phi": ("PhiConfig", {**_DECODER}, False),
    "phi3": ("Phi3Config", {**_DECODER, "num_key_value_heads": 2}, False),
    "gemma": ("GemmaConfig", {**_DECODER, "num_key_value_heads": 2, "head_dim": 16}, False),
    "falcon": ("FalconConfig", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}, False),
    "opt": (
        "OPTConfig",
        {
            "hidden_size": 64,
            "ffn_dim": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "word_embed_proj_dim": 64,
        },
        False,
    ),
    "bloom": ("BloomConfig", {"hidden_size": 64, "n_layer": 2, "n_head": 4}, False),
    # with the default init (factor 1.0) a random T5 decodes nothing but <pad>, i.e. empty text
    "t5": ("T5Config", {**_T5, "initializer_factor": 10.0}, True),
    "mt5": ("MT5Config", {**_T5, "initializer_factor": 10.0}, True),
    "bart": (
        "BartConfig",
        {
            "d_model": 64,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
        },
        True,
    ),
}


def build_family(
    family: str, path: str | Path, seed: int = 0, generation: dict[str, Any] | None = None, **overrides: Any
) -> Path:
    """Save a tiny random model of one of `FAMILIES` (safetensors) and its tokenizer into `path`; return it.

    `overrides` replace config values; `generation` sets values in the saved `generation_config.json` (e.g.
    `forced_bos_token_id`, `suppress_tokens`), on top of the tokenizer's special token ids.
    """
    import torch
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    class_name, kwargs, seq2seq = FAMILIES[family]
    path = Path(path)
    tokenizer = build_tokenizer()
    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if seq2seq:  # T5's convention (start with <pad>); BART starts with </s>, as bart-large-cnn does
        ids["decoder_start_token_id"] = tokenizer.eos_token_id if family == "bart" else tokenizer.pad_token_id
    config_class = getattr(transformers, class_name)
    if "max_position_embeddings" in inspect.signature(config_class).parameters:
        ids["max_position_embeddings"] = 512
    config = config_class(**{**ids, **kwargs, **overrides})
    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    torch.manual_seed(seed)
    model = auto.from_config(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = config.bos_token_id, config.eos_token_id, config.pad_token_id
    if seq2seq:
        gen.decoder_start_token_id = config.decoder_start_token_id
    for name, value in (generation or {}).items():
        setattr(gen, name, value)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
