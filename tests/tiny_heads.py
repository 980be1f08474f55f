"""Tiny random models for every non-generation task, built offline in a second or two each, plus synthetic
images and WAV files to feed them (numpy only).

`build_head(kind, path)` saves a model and its preprocessor (tokenizer, image processor, feature extractor)
into `path` and returns it. Kinds (`HEAD_KINDS`):

- text: `bert-classifier` (3 labels, id2label), `bert-ner` (5 BIO labels), `bert-qa`, `bert-mlm` (a `<mask>`
  token), `bert-base` (AutoModel, for embed), `cross-encoder` (1 label, for rerank);
- vision: `vit-classifier`, `yolos` (object detection), `segformer` (semantic segmentation),
  `vit-gpt2` (a VisionEncoderDecoder captioner);
- audio: `wav2vec2-classifier`, `wav2vec2-ctc` (speech recognition with a character vocabulary), `whisper`
  (speech recognition, sequence to sequence, with Whisper's special tokens);
- `tiny-sd`: a diffusers StableDiffusionPipeline folder (UNet, VAE, CLIP text encoder, scheduler).

Labels are deterministic so a test can check them; the weights are random, so the answers are not meaningful:
tests check shapes, ranges, types and that the same input gives the same answer.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, cast

from tiny_models import _trained_tokenizer_json, build_tokenizer

HEAD_KINDS = (
    "bert-classifier",
    "bert-ner",
    "bert-qa",
    "bert-mlm",
    "bert-base",
    "cross-encoder",
    "vit-classifier",
    "yolos",
    "segformer",
    "vit-gpt2",
    "wav2vec2-classifier",
    "wav2vec2-ctc",
    "whisper",
    "tiny-sd",
)
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
MASK = "<mask>"
SAMPLING_RATE = 16000


def text_tokenizer() -> Any:
    """The in-process BPE tokenizer with BERT-style extras: a mask token and `<s> A </s> B </s>` framing."""
    from tokenizers.processors import TemplateProcessing

    tok = build_tokenizer()
    tok.add_special_tokens({"mask_token": MASK, "cls_token": "<s>", "sep_token": "</s>"})
    bos, eos = tok.convert_tokens_to_ids("<s>"), tok.convert_tokens_to_ids("</s>")
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return tok


def _bert_config(tokenizer: Any, **extra: Any) -> Any:
    import transformers

    return transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _labels(names: dict[int, str]) -> dict[str, Any]:
    return {"id2label": names, "label2id": {v: k for k, v in names.items()}}


def _vit_config(**extra: Any) -> Any:
    import transformers

    size: dict[str, Any] = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    return transformers.ViTConfig(**size, image_size=32, patch_size=8, **extra)


def _image_processor(path: Path, kind: str, size: dict[str, int]) -> None:
    (path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": kind, "size": size}))


def build_head(kind: str, path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random model of `kind` (see `HEAD_KINDS`) with its preprocessor into `path`; return it."""
    import torch
    import transformers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t = transformers
    if kind in ("bert-classifier", "bert-ner", "bert-qa", "bert-mlm", "bert-base", "cross-encoder"):
        tok = text_tokenizer()
        model_class, extra = {
            "bert-classifier": (t.BertForSequenceClassification, _labels(LABELS)),
            "bert-ner": (t.BertForTokenClassification, _labels(NER_LABELS)),
            "bert-qa": (t.BertForQuestionAnswering, {}),
            "bert-mlm": (t.BertForMaskedLM, {}),
            "bert-base": (t.BertModel, {}),
            "cross-encoder": (t.BertForSequenceClassification, {"num_labels": 1}),
        }[kind]
        model_class(_bert_config(tok, **extra)).save_pretrained(path)
        tok.save_pretrained(path)
    elif kind == "vit-classifier":
        t.ViTForImageClassification(_vit_config(**_labels(LABELS))).save_pretrained(path)
        _image_processor(path, "ViTImageProcessor", {"height": 32, "width": 32})
    elif kind == "yolos":
        yolos_config = t.YolosConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=[64, 64],
            patch_size=16,
            num_detection_tokens=5,
            **_labels({0: "cat", 1: "dog", 2: "car"}),
        )
        t.YolosForObjectDetection(yolos_config).save_pretrained(path)
        _image_processor(path, "YolosImageProcessor", {"shortest_edge": 64, "longest_edge": 64})
    elif kind == "segformer":
        segformer_config = t.SegformerConfig(
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[8, 16],
            patch_sizes=[7, 3],
            strides=[4, 2],
            num_attention_heads=[1, 1],
            mlp_ratios=[2, 2],
            decoder_hidden_size=16,
            **_labels({0: "background", 1: "road", 2: "sky"}),
        )
        t.SegformerForSemanticSegmentation(segformer_config).save_pretrained(path)
        _image_processor(path, "SegformerImageProcessor", {"height": 64, "width": 64})
    elif kind == "vit-gpt2":
        _build_captioner(path)
    elif kind in ("wav2vec2-classifier", "wav2vec2-ctc"):
        _build_wav2vec2(path, ctc=kind == "wav2vec2-ctc")
    elif kind == "whisper":
        _build_whisper(path)
    elif kind == "tiny-sd":
        _build_tiny_sd(path)
    else:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    return path


def _build_captioner(path: Path) -> None:
    import transformers as t

    tok = build_tokenizer()
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    decoder = t.GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128, add_cross_attention=True, **ids
    )
    config = t.VisionEncoderDecoderConfig(encoder=_vit_config(), decoder=decoder)
    config.decoder_start_token_id, config.pad_token_id = tok.bos_token_id, tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    model = t.VisionEncoderDecoderModel(config=config)
    gen = model.generation_config
    gen.decoder_start_token_id, gen.bos_token_id = tok.bos_token_id, tok.bos_token_id
    gen.eos_token_id, gen.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    _image_processor(path, "ViTImageProcessor", {"height": 32, "width": 32})


def _build_wav2vec2(path: Path, *, ctc: bool) -> None:
    import transformers as t

    size: dict[str, Any] = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (16, 16, 16),
        "conv_stride": (5, 4, 4),
        "conv_kernel": (10, 8, 8),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "classifier_proj_size": 16,
    }
    extractor = t.Wav2Vec2FeatureExtractor(sampling_rate=SAMPLING_RATE, return_attention_mask=True)
    if ctc:
        vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
        vocab.update({c: 5 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")})
        (path / "vocab.json").write_text(json.dumps(vocab))
        tok = t.Wav2Vec2CTCTokenizer(str(path / "vocab.json"))
        config = t.Wav2Vec2Config(**size, vocab_size=len(vocab), pad_token_id=0)
        t.Wav2Vec2ForCTC(config).save_pretrained(path)
        t.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tok).save_pretrained(path)
    else:
        config = t.Wav2Vec2Config(**size, **_labels({0: "speech", 1: "music", 2: "noise"}))
        t.Wav2Vec2ForSequenceClassification(config).save_pretrained(path)
        extractor.save_pretrained(path)


def _build_whisper(path: Path) -> None:
    """WhisperForConditionalGeneration with the in-process BPE (saved as vocab.json + merges.txt) plus Whisper's
    special tokens, an 80-bin feature extractor and a generation config for English transcription."""
    import transformers as t
    from tokenizers import Tokenizer

    Tokenizer.from_str(_trained_tokenizer_json()).model.save(str(path))
    end = "<|endoftext|>"
    specials = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>", "<|notimestamps|>"]
    tok = t.WhisperTokenizer(
        str(path / "vocab.json"), str(path / "merges.txt"), unk_token=end, bos_token=end, eos_token=end, pad_token=end
    )
    tok.add_special_tokens({"additional_special_tokens": specials})
    ids = {s: cast(int, tok.convert_tokens_to_ids(s)) for s in [end, *specials]}
    size: dict[str, Any] = {
        "d_model": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
    }
    config = t.WhisperConfig(
        **size,
        vocab_size=len(tok),
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=ids[end],
        bos_token_id=ids[end],
        eos_token_id=ids[end],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    model = t.WhisperForConditionalGeneration(config)
    gen: Any = model.generation_config
    gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id = ids["<|startoftranscript|>"], ids[end], ids[end]
    gen.no_timestamps_token_id, gen.is_multilingual, gen.max_length = ids["<|notimestamps|>"], False, 64
    gen.forced_decoder_ids, gen.begin_suppress_tokens, gen.suppress_tokens = None, None, []
    model.save_pretrained(path)
    t.WhisperProcessor(feature_extractor=t.WhisperFeatureExtractor(feature_size=80), tokenizer=tok).save_pretrained(
        path
    )


def _build_tiny_sd(path: Path) -> None:
    import diffusers
    import transformers as t

    tok = build_tokenizer()
    tok.model_max_length = 32
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=2,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    text_config = t.CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=32,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        projection_dim=16,
    )
    pipe: Any = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=t.CLIPTextModel(text_config),
        tokenizer=tok,
        unet=unet,
        scheduler=diffusers.DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)


# ------------------------------------------------------------------------------------------ media samples
def write_png(path: str | Path, width: int = 48, height: int = 40, seed: int = 0) -> Path:
    """A random RGB PNG (Pillow)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return Path(path)


def write_wav(path: str | Path, seconds: float = 1.0, rate: int = SAMPLING_RATE, freq: float = 440.0) -> Path:
    """A mono 16-bit PCM WAV of a sine tone (written by hand: the format is 44 bytes of header)."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm))
    Path(path).write_bytes(header + pcm)
    return Path(path)
