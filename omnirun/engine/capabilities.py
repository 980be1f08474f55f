"""Which tasks a model can serve, from its config alone (no weights): the gate every task passes before loading.

A checkpoint's `architectures` name the head its weights were trained with (`BertForSequenceClassification`,
`LlamaForCausalLM`, ...). Each `Head` below is one Transformers AutoModel class and the task family it serves;
the architectures each head accepts are Transformers' own `MODEL_FOR_*_MAPPING_NAMES` tables, with class-name
suffixes as the fallback for classes outside them (remote code). Loading a checkpoint through another head gives
that head random weights: a BERT classifier loaded as `BertLMHeadModel` "generates" noise. So a task asks
`head_for(family, config)` and gets the head to load, or a ConfigError naming what the model can serve instead.

Adding a task family is one `Head` line (and a line in `TASK_FAMILY` when the task's name differs from the
family's). No torch import here; transformers is imported only when a config is examined.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from omnirun.config import ModelType, TaskName
from omnirun.errors import ConfigError

GENERATE = "generate"
EXPORT = "export"
RERANK = "rerank"
ANY = None
"""A task that serves every head (`export` writes whatever the checkpoint is)."""


@dataclass(frozen=True)
class Head:
    """One way to load a checkpoint: a Transformers AutoModel class and the task family it serves."""

    name: str
    family: str
    """The task family (an omnirun task name, present or planned)."""
    description: str
    auto_class: str
    """The `transformers` AutoModel class that builds this head."""
    mappings: tuple[str, ...]
    """`transformers.models.auto.modeling_auto` tables (model_type -> class name) whose classes are this head."""
    suffixes: tuple[str, ...] = ()
    """Class-name endings for architectures outside those tables (remote code)."""
    inputs: str = "text"
    """What its preprocessor takes: `text` (a tokenizer), `image`, `audio` or `multimodal`."""
    encoder_decoder: bool | None = None
    """A suffix match needs the config's `is_encoder_decoder` to be this (None: either)."""


HEADS: tuple[Head, ...] = (
    Head(
        "causal-lm",
        GENERATE,
        "text generation",
        "AutoModelForCausalLM",
        ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",),
        ("ForCausalLM", "LMHeadModel"),
        encoder_decoder=False,
    ),
    Head(
        "seq2seq",
        GENERATE,
        "text-to-text generation",
        "AutoModelForSeq2SeqLM",
        ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",),
        ("ForConditionalGeneration",),
        encoder_decoder=True,
    ),
    Head(
        "sequence-classification",
        "classify",
        "text classification",
        "AutoModelForSequenceClassification",
        ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",),
        ("ForSequenceClassification",),
    ),
    Head(
        "token-classification",
        "token_classify",
        "token classification (NER)",
        "AutoModelForTokenClassification",
        ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",),
        ("ForTokenClassification",),
    ),
    Head(
        "question-answering",
        "qa",
        "extractive question answering",
        "AutoModelForQuestionAnswering",
        ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",),
        ("ForQuestionAnswering",),
    ),
    Head(
        "masked-lm",
        "fill_mask",
        "masked-token filling",
        "AutoModelForMaskedLM",
        ("MODEL_FOR_MASKED_LM_MAPPING_NAMES",),
        ("ForMaskedLM",),
    ),
    Head(
        "multiple-choice",
        "multiple_choice",
        "multiple choice",
        "AutoModelForMultipleChoice",
        ("MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",),
        ("ForMultipleChoice",),
    ),
    Head(
        "image-classification",
        "image_classify",
        "image classification",
        "AutoModelForImageClassification",
        ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",),
        ("ForImageClassification",),
        inputs="image",
    ),
    Head(
        "object-detection",
        "detect",
        "object detection",
        "AutoModelForObjectDetection",
        ("MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",),
        ("ForObjectDetection",),
        inputs="image",
    ),
    Head(
        "semantic-segmentation",
        "segment",
        "image segmentation",
        "AutoModelForSemanticSegmentation",
        ("MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",),
        ("ForSemanticSegmentation",),
        inputs="image",
    ),
    Head(
        "image-text-to-text",
        "image_to_text",
        "image-to-text generation",
        "AutoModelForImageTextToText",
        ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",),
        inputs="multimodal",
    ),
    Head(
        "audio-classification",
        "audio_classify",
        "audio classification",
        "AutoModelForAudioClassification",
        ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",),
        ("ForAudioClassification",),
        inputs="audio",
    ),
    Head(
        "speech-seq2seq",
        "transcribe",
        "speech recognition",
        "AutoModelForSpeechSeq2Seq",
        ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",),
        inputs="audio",
    ),
    Head(
        "ctc",
        "transcribe",
        "speech recognition",
        "AutoModelForCTC",
        ("MODEL_FOR_CTC_MAPPING_NAMES",),
        ("ForCTC",),
        "audio",
    ),
    Head(
        "text-to-waveform",
        "speak",
        "text to speech",
        "AutoModelForTextToWaveform",
        ("MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES",),
    ),
)
"""In order of preference when a checkpoint fits several (the first one is the checkpoint's own head)."""

BASE = Head("base", "embed", "embeddings (hidden states)", "AutoModel", ("MODEL_MAPPING_NAMES",), ("Model",))
"""The model without a head: every checkpoint of a known model_type carries its base model's weights."""

TASK_FAMILY: dict[str, str | None] = {
    TaskName.generate: GENERATE,
    TaskName.batch: GENERATE,
    TaskName.chat: GENERATE,
    TaskName.stream: GENERATE,
    TaskName.benchmark: GENERATE,
    TaskName.export: ANY,
    TaskName.caption: "image_to_text",
}
"""The family each omnirun task needs; a task missing here needs the family of its own name (`classify`...)."""


def task_family(task: str) -> str | None:
    return TASK_FAMILY.get(task, str(task))


def require_generation(task: str, why: str) -> None:
    """ConfigError (one line) for a non-generation task on a backend that only generates text (`why` says so)."""
    if task_family(task) != GENERATE:
        raise ConfigError(
            f"task={task} needs the Transformers backend ({why}); set hardware.backend=transformers or auto"
        )


def _mapping(name: str) -> dict[str, Any]:
    from transformers.models.auto import modeling_auto

    return dict(getattr(modeling_auto, name, {}))


@functools.cache
def _classes(head: Head) -> frozenset[str]:
    names: set[str] = set()
    for table in head.mappings:
        for value in _mapping(table).values():
            names.update(value if isinstance(value, (list, tuple)) else [value])
    return frozenset(names)


@functools.cache
def _model_types(head: Head) -> frozenset[str]:
    return frozenset(key for table in head.mappings for key in _mapping(table))


def architectures(config: Any) -> list[str]:
    return [str(a) for a in (getattr(config, "architectures", None) or [])]


def heads_of(config: Any) -> list[Head]:
    """The heads this config's checkpoint has weights for, the checkpoint's own first; then the base model.

    By `architectures` (a class in a head's table, else a matching suffix); a config without architectures
    (written by hand) fits every head its `model_type` has a class for."""
    found: list[Head] = []
    archs = architectures(config)
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    for arch in archs:
        for head in HEADS:
            if head not in found and arch in _classes(head):
                found.append(head)
    for arch in archs:
        if any(arch in _classes(h) for h in (*HEADS, BASE)):
            continue
        for head in HEADS:
            wanted = head.encoder_decoder
            if head.suffixes and arch.endswith(head.suffixes) and wanted in (None, encoder_decoder):
                if head not in found:
                    found.append(head)
                break
    if not archs:
        model_type = getattr(config, "model_type", None)
        found = [h for h in HEADS if model_type in _model_types(h)]
        if GENERATE in {h.family for h in found}:  # a causal LM or a seq2seq model, as is_encoder_decoder says
            wrong = "causal-lm" if encoder_decoder else "seq2seq"
            found = [h for h in found if h.name != wrong] or found
    unknown_base = not found and any(a.endswith(BASE.suffixes) for a in archs)  # remote code: `MyModel`
    if getattr(config, "model_type", None) in _model_types(BASE) or unknown_base:
        found.append(BASE)
    return found


def families_of(config: Any) -> list[str]:
    return list(dict.fromkeys(h.family for h in heads_of(config)))


def head_for(
    family: str | None, config: Any, model_type: ModelType | None = None, weights: frozenset[str] | None = None
) -> Head | None:
    """The head that serves `family` for this config (None: it serves none). `family=None` (export) takes the
    checkpoint's own head. For generation, an explicit `model_type` picks causal LM or seq2seq. `weights` (the
    checkpoint's tensor names, for a config without `architectures`) keeps only the heads whose weights it holds."""
    heads = heads_of(config)
    if weights is not None and not architectures(config):
        heads = [h for h in heads if h == BASE or has_weights(h, config, weights)]
    if family is ANY:
        return heads[0] if heads else None
    if family == RERANK:  # a cross-encoder scores pairs; any other model ranks by embedding similarity
        classifier = next((h for h in heads if h.family == "classify"), None)
        if classifier is not None:
            return classifier if labels_of(config) <= 2 else None
        return next((h for h in heads if h.family == "embed"), None)
    serving = [h for h in heads if h.family == family]
    if family == GENERATE and model_type is not None:
        wanted = "seq2seq" if model_type == ModelType.seq2seq else "causal-lm"
        return next((h for h in HEADS if h.name == wanted), None) if serving else None
    return serving[0] if serving else None


def labels_of(config: Any) -> int:
    """A classification head's outputs (`num_labels`, 2 when the config does not say)."""
    value = getattr(config, "num_labels", 2)
    return value if isinstance(value, int) else 2


def has_weights(head: Head, config: Any, weights: frozenset[str]) -> bool:
    """Whether a checkpoint whose tensors are `weights` holds every parameter of `head` (built on the meta
    device; names compared without the base model's prefix, tied parameters counted once)."""
    import torch
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # building a head only to list its parameters: its usage notes do not apply
    try:
        with torch.device("meta"):
            model = model_class(head).from_config(config)
    except Exception:  # the head cannot be built for this config: it is not in the checkpoint either
        return False
    finally:
        hf_logging.set_verbosity(level)
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    stored = {name.removeprefix(prefix) for name in weights}
    return all(name.removeprefix(prefix) in stored for name, _ in model.named_parameters())


def model_class(head: Head) -> Any:
    import transformers

    return getattr(transformers, head.auto_class)


def check_task(
    task: str, config: Any, model: str, model_type: ModelType | None = None, weights: frozenset[str] | None = None
) -> Head:
    """The head to load for `task`; ConfigError (one line) naming the task, the model's architectures and the
    tasks it can serve when it cannot serve this one. `weights`: see `head_for`."""
    family = task_family(task)
    head = head_for(family, config, model_type, weights)
    if head is not None:
        return head
    archs = ", ".join(architectures(config)) or f"none listed (model_type {getattr(config, 'model_type', None)!r})"
    if family == RERANK and labels_of(config) > 2 and head_for("classify", config, None, weights) is not None:
        raise ConfigError(
            f"task=rerank needs a cross-encoder (one relevance logit, or two labels), but model {model!r} is a "
            f"classifier of {labels_of(config)} labels ({', '.join(map(str, config.id2label.values()))}), whose "
            "probabilities are not relevance; use a cross-encoder or an embedding model, or task=classify"
        )
    need = "a text-generation model (a causal LM or an encoder-decoder)" if family == GENERATE else f"a {family} model"
    if family is ANY:
        need = "an architecture Transformers can load"
    where = ""
    if weights is not None and not architectures(config):
        where = " and its weights hold no such head (loading one would give it random weights)"
    raise ConfigError(
        f"task={task} needs {need}, but model {model!r} has architectures [{archs}]{where}; {serves(config, weights)}"
    )


def serves(config: Any, weights: frozenset[str] | None = None) -> str:
    """What a model can do, in one clause: its omnirun tasks, and its heads omnirun does not run yet."""
    heads = heads_of(config)
    if weights is not None and not architectures(config):
        heads = [h for h in heads if h == BASE or has_weights(h, config, weights)]
    families = {h.family for h in heads}
    served = {*families, RERANK} if head_for(RERANK, config, None, weights) is not None else families
    tasks = [str(t) for t in TaskName if (task_family(t) is ANY and heads) or task_family(t) in served]
    planned = [f"{h.family} ({h.description})" for h in heads if h.family not in {task_family(t) for t in TaskName}]
    text = f"it can serve task={', task='.join(tasks)}" if tasks else "omnirun cannot run it"
    if planned:
        text += f"; its heads are for {', '.join(dict.fromkeys(planned))}, which omnirun does not run yet"
    return text
