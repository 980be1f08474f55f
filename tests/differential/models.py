"""Tiny random models of the families the differential tier compares, each saved with its preprocessor: a
WordPiece tokenizer trained in-process that returns `token_type_ids` (BERT, DeBERTa-v2), the same vocabulary
without token types (DistilBERT), a byte-level BPE with RoBERTa's offset position table, BLIP with its
processor, ConvNeXt. `build(kind, path)` saves one and returns the folder.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from tiny_heads import _labels, text_tokenizer

from tiny_models import corpus

KINDS = (
    "bert-qa",
    "bert-qa-256",
    "deberta-qa",
    "distilbert-qa",
    "roberta-qa",
    "bert-classifier",
    "deberta-classifier",
    "distilbert-classifier",
    "roberta-classifier",
    "bert-ner",
    "deberta-ner",
    "distilbert-ner",
    "roberta-ner",
    "bert-mlm",
    "roberta-mlm",
    "distilbert-mlm",
    "bert-base",
    "roberta-base",
    "bert-cross-encoder",
    "bert-cross-encoder-2",
    "convnext-classifier",
    "blip",
)
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
NER = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
SIZE: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@functools.lru_cache(maxsize=1)
def wordpiece_vocab() -> dict[str, int]:
    """A WordPiece vocabulary trained on the tiny corpus (BERT's special tokens first, then [DEC] for BLIP)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    return dict(tok.get_vocab())


def wordpiece(token_types: bool = True) -> Any:
    """A `BertTokenizer` (`[CLS] A [SEP] B [SEP]`, token types 0/1); without `token_types` it is DistilBERT's
    kind, whose `model_input_names` leave them out."""
    import transformers

    names: dict[str, Any] = {} if token_types else {"model_input_names": ["input_ids", "attention_mask"]}
    return transformers.BertTokenizer(vocab=wordpiece_vocab(), model_max_length=512, **names)


def _bert_like(kind: str, tok: Any, head: str, extra: dict[str, Any]) -> Any:
    import transformers as t

    family = kind.split("-")[0]
    common = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, **extra}
    if family == "bert":  # `bert-qa-256`: a position table shorter than the pipeline's 384-token window
        positions = 256 if kind.endswith("-256") else 512
        config: Any = t.BertConfig(**SIZE, max_position_embeddings=positions, **common)
    elif family == "deberta":
        config = t.DebertaV2Config(**SIZE, max_position_embeddings=512, type_vocab_size=2, **common)
    elif family == "distilbert":
        config = t.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=512, **common)
    else:  # RoBERTa: positions start after the padding index, so 513 entries serve 512 tokens (pad id 0 here)
        config = t.RobertaConfig(
            **SIZE, max_position_embeddings=512 + tok.pad_token_id + 1, type_vocab_size=1, **common
        )
    prefix = {"bert": "Bert", "deberta": "DebertaV2", "distilbert": "DistilBert", "roberta": "Roberta"}[family]
    return getattr(t, f"{prefix}{head}")(config)


def build(kind: str, path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random model of `kind` (one of `KINDS`) with its preprocessor into `path`; return it."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if kind == "convnext-classifier":
        _build_convnext(path)
        return path
    if kind == "blip":
        _build_blip(path)
        return path
    family, task = kind.split("-", 1)
    if family == "roberta":  # RoBERTa's tokenizer gives no token types (its table has one row)
        tok = text_tokenizer()
        tok.model_input_names = tok.init_kwargs["model_input_names"] = ["input_ids", "attention_mask"]
    else:
        tok = wordpiece(token_types=family != "distilbert")
    head, extra = {
        "qa": ("ForQuestionAnswering", {}),
        "qa-256": ("ForQuestionAnswering", {}),
        "classifier": ("ForSequenceClassification", _labels(LABELS)),
        "ner": ("ForTokenClassification", _labels(NER)),
        "mlm": ("ForMaskedLM", {}),
        "base": ("Model", {}),
        "cross-encoder": ("ForSequenceClassification", {"num_labels": 1}),
        "cross-encoder-2": ("ForSequenceClassification", {"num_labels": 2}),
    }[task]
    _bert_like(kind, tok, head, extra).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _build_convnext(path: Path) -> None:
    import transformers as t

    config = t.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **_labels(LABELS))
    t.ConvNextForImageClassification(config).save_pretrained(path)
    processor = {"image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 32}, "crop_pct": 0.875}
    (path / "preprocessor_config.json").write_text(json.dumps(processor))


def _build_blip(path: Path) -> None:
    """BlipForConditionalGeneration (ViT 32x32 images, a 2-layer text decoder) and a BlipProcessor whose
    tokenizer is the WordPiece one; [DEC] starts a caption, [SEP] ends it, as in Salesforce's checkpoints."""
    import transformers as t

    tok = wordpiece()
    tok.add_special_tokens({"bos_token": "[DEC]"})
    ids = {"bos_token_id": tok.convert_tokens_to_ids("[DEC]"), "sep_token_id": tok.sep_token_id}
    text = t.BlipTextConfig(
        vocab_size=len(tok), **SIZE, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, **ids
    )
    vision = t.BlipVisionConfig(**SIZE, image_size=32, patch_size=8)
    config = t.BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())
    model = t.BlipForConditionalGeneration(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = ids["bos_token_id"], tok.sep_token_id, tok.pad_token_id
    model.save_pretrained(path)
    size = {"height": 32, "width": 32}
    t.BlipProcessor(image_processor=t.BlipImageProcessor(size=size), tokenizer=tok).save_pretrained(path)
