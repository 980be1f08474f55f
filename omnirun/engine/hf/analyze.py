"""The non-generation tasks on a loaded Transformers model: embeddings, classification, NER, extractive QA,
fill-mask, reranking, image classification / detection / segmentation, audio classification, speech
recognition and captioning.

Each takes a batch of items (a record's fields, with images and audio already decoded) and returns one `Answer`
per item, in order. Pre- and post-processing are Transformers' own pipelines wherever one exists
(`text-classification`, `token-classification`, `fill-mask`, `image-classification`, `object-detection`,
`image-segmentation`, `audio-classification`, `automatic-speech-recognition`). Written here instead, and why:
- `embed`: the `feature-extraction` pipeline returns unpooled per-token states as nested Python lists, one
  text at a time; pooling a padded batch on tensors is a few lines and many times faster.
- `qa`: Transformers 5 has no question-answering pipeline; the span search below is the one that pipeline did
  (best start <= end within the context, scores as the product of the two softmaxes, long contexts in strides).
- `rerank`: a cross-encoder's relevance logit per (query, document) pair, or cosine similarity of embeddings.
- `caption`: the image processor plus `generate`, so captions get the usual generation fields and metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from omnirun.config import GenerationConfig, TaskConfig, TaskName
from omnirun.engine.base import Answer, Completion
from omnirun.engine.hf.encoders import embed_items, question_answer, rerank_cross, rerank_embed
from omnirun.engine.hf.generate import generation_config
from omnirun.inputs import media

PIPELINES = {
    TaskName.classify: "text-classification",
    TaskName.token_classify: "token-classification",
    TaskName.fill_mask: "fill-mask",
    TaskName.image_classify: "image-classification",
    TaskName.detect: "object-detection",
    TaskName.segment: "image-segmentation",
    TaskName.audio_classify: "audio-classification",
    TaskName.transcribe: "automatic-speech-recognition",
}
"""The tasks whose pre- and post-processing is a Transformers pipeline."""


@dataclass
class Components:
    """The preprocessors a pipeline may need, from the model's folder."""

    tokenizer: Any = None
    image_processor: Any = None
    feature_extractor: Any = None
    processor: Any = None

    def pipeline_kwargs(self) -> dict[str, Any]:
        names = ("tokenizer", "image_processor", "feature_extractor")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def components(folder: str, preprocessor: Any, common: dict[str, Any]) -> Components:
    """The tokenizer, image processor and feature extractor in `folder` (a processor's parts count too)."""
    import transformers

    found = Components()
    candidates = [preprocessor]
    for auto in ("AutoProcessor", "AutoTokenizer", "AutoImageProcessor", "AutoFeatureExtractor"):
        try:
            candidates.append(getattr(transformers, auto).from_pretrained(folder, **common))
        except Exception:  # a model folder without this kind of preprocessor
            continue
    for obj in candidates:
        for part in (obj, *(getattr(obj, n, None) for n in ("tokenizer", "image_processor", "feature_extractor"))):
            if part is None:
                continue
            if isinstance(part, transformers.ProcessorMixin):
                found.processor = found.processor or part
            elif isinstance(part, transformers.PreTrainedTokenizerBase):
                found.tokenizer = found.tokenizer or part
            elif isinstance(part, transformers.BaseImageProcessor):
                found.image_processor = found.image_processor or part
            elif isinstance(part, transformers.FeatureExtractionMixin):
                found.feature_extractor = found.feature_extractor or part
    return found


def make_pipeline(task: TaskName, model: Any, parts: Components, options: TaskConfig) -> Any:
    """The Transformers pipeline for `task` on the loaded model and its preprocessors."""
    import transformers

    kwargs: dict[str, Any] = {}
    if task == TaskName.token_classify:
        kwargs["aggregation_strategy"] = str(options.aggregation)
    build: Any = transformers.pipeline  # typed by overloads on literal task names; ours is a str
    return build(PIPELINES[task], model=model, **parts.pipeline_kwargs(), **kwargs)


def call_options(task: TaskName, options: TaskConfig, item: dict[str, Any] | None = None) -> dict[str, Any]:
    """The per-call arguments of a task's pipeline."""
    if task in (TaskName.classify, TaskName.fill_mask, TaskName.image_classify, TaskName.audio_classify):
        return {"top_k": options.top_k}
    if task == TaskName.detect:
        return {"threshold": options.threshold}
    if task == TaskName.segment:
        return {"subtask": "semantic"}
    if task == TaskName.transcribe:
        out: dict[str, Any] = {}
        if options.chunk_length_s and item and item["audio_s"] > options.chunk_length_s:
            out["chunk_length_s"] = options.chunk_length_s
        return out
    return {}


def run_pipeline(
    pipe: Any, task: TaskName, items: list[dict[str, Any]], options: TaskConfig, params: GenerationConfig
) -> list[Answer]:
    """One pipeline call over the batch (transcribe: one call per item, as chunking depends on its length)."""
    if task == TaskName.transcribe:
        return [transcribe(pipe, item, options, params) for item in items]
    inputs = [pipeline_input(task, item) for item in items]
    kwargs = call_options(task, options)
    # a pipeline given a one-element list unwraps some outputs and not others: call it on the input itself
    outputs = pipe(inputs, batch_size=len(inputs), **kwargs) if len(inputs) > 1 else [pipe(inputs[0], **kwargs)]
    answers = [answer(task, out) for out in outputs]
    if pipe.tokenizer is not None and task in (TaskName.classify, TaskName.token_classify, TaskName.fill_mask):
        for item, a in zip(items, answers, strict=True):
            a.input_tokens = len(pipe.tokenizer(item["prompt"], item.get("text_pair"))["input_ids"])
    return answers


def pipeline_input(task: TaskName, item: dict[str, Any]) -> Any:
    if task == TaskName.classify:
        pair = item.get("text_pair")
        return {"text": item["prompt"], "text_pair": pair} if pair is not None else item["prompt"]
    if task in (TaskName.token_classify, TaskName.fill_mask):
        return item["prompt"]
    if task in (TaskName.image_classify, TaskName.detect, TaskName.segment):
        return item["image"]
    return {"raw": item["audio"], "sampling_rate": item["sampling_rate"]}


def answer(task: TaskName, out: Any) -> Answer:
    """A pipeline's output for one item as row fields (numpy scalars made plain floats)."""
    if task in (TaskName.classify, TaskName.image_classify, TaskName.audio_classify):
        ranked = out if isinstance(out, list) else [out]
        best = ranked[0]
        scores = {str(x["label"]): float(x["score"]) for x in ranked}
        return Answer({"label": str(best["label"]), "score": float(best["score"]), "scores": scores})
    if task == TaskName.token_classify:
        entities = [
            {
                "entity": str(e.get("entity_group", e.get("entity"))),
                "word": str(e["word"]),
                "start": None if e.get("start") is None else int(e["start"]),
                "end": None if e.get("end") is None else int(e["end"]),
                "score": float(e["score"]),
            }
            for e in out
        ]
        return Answer({"entities": entities})
    if task == TaskName.fill_mask:
        masks = out if out and isinstance(out[0], list) else [out]
        predictions = [
            [{"token": str(p["token_str"]), "sequence": str(p["sequence"]), "score": float(p["score"])} for p in m]
            for m in masks
        ]
        return Answer({"predictions": predictions[0] if len(predictions) == 1 else predictions})
    if task == TaskName.detect:
        boxes = [
            {"label": str(b["label"]), "score": float(b["score"]), "box": {k: int(v) for k, v in b["box"].items()}}
            for b in out
        ]
        return Answer({"boxes": boxes})
    if task == TaskName.segment:
        labels = [str(s["label"]) for s in out]
        return Answer({"labels": labels}, images={"masks": [s["mask"] for s in out]})
    raise ValueError(f"no pipeline answer for task={task}")


def transcribe(pipe: Any, item: dict[str, Any], options: TaskConfig, params: GenerationConfig) -> Answer:
    """Speech to text; long audio in chunks; `chunks` with (start, end) seconds when timestamps are asked."""
    kwargs = call_options(TaskName.transcribe, options, item)
    ctc = getattr(pipe, "type", "") in ("ctc", "ctc_with_lm")
    if options.return_timestamps:
        kwargs["return_timestamps"] = "word" if ctc else True
    if not ctc:  # a sequence-to-sequence model (Whisper) generates: the run's generation settings apply
        kwargs["generate_kwargs"] = {"generation_config": generation_config(pipe.model, pipe.tokenizer, params)}
    start = time.perf_counter()
    out = pipe({"raw": item["audio"], "sampling_rate": item["sampling_rate"]}, **kwargs)
    text = str(out["text"])
    result: dict[str, Any] = {}
    if options.return_timestamps:
        result["chunks"] = [
            {"text": str(c["text"]), "timestamp": [None if t is None else float(t) for t in c["timestamp"]]}
            for c in out.get("chunks", [])
        ]
    tokens = len(pipe.tokenizer(text, add_special_tokens=False)["input_ids"]) if pipe.tokenizer is not None else 0
    completion = Completion(text, 0, tokens, "stop", time.perf_counter() - start)  # CTC/Whisper emit no EOS we count
    return Answer(result, completion=completion)


def caption(
    model: Any, parts: Components, items: list[dict[str, Any]], params: GenerationConfig, seed: int | None
) -> list[Answer]:
    """Captions (or answers to `prompt` about the image) from the image processor and `generate`."""
    import torch

    tokenizer = parts.tokenizer
    images = [i["image"] for i in items]
    prompts = [i.get("prompt") for i in items]
    if parts.processor is not None and any(prompts):
        enc = parts.processor(images=images, text=[p or "" for p in prompts], return_tensors="pt", padding=True)
    elif parts.image_processor is not None:
        enc = parts.image_processor(images=images, return_tensors="pt")
    else:
        raise ValueError("the model has no image processor (preprocessor_config.json) to read images with")
    enc = {k: v.to(model.device) for k, v in enc.items() if hasattr(v, "to")}
    if seed is not None:
        torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=generation_config(model, tokenizer, params))
    seconds = time.perf_counter() - start
    # an encoder-decoder's output starts with the decoder's start token; a decoder-only model echoes its prompt
    prompt_len = 1 if model.config.is_encoder_decoder else enc["input_ids"].shape[1] if "input_ids" in enc else 0
    answers = []
    for row in out[:, prompt_len:].tolist():
        ids = [t for t in row if t != tokenizer.pad_token_id]
        ended = bool(ids) and ids[-1] == tokenizer.eos_token_id
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        prompt_tokens = 0 if model.config.is_encoder_decoder else prompt_len
        completion = Completion(text, prompt_tokens, len(ids), "stop" if ended else "length", seconds, token_ids=ids)
        answers.append(Answer({}, completion=completion))
    return answers


class Analyzer:
    """The non-generation tasks on one loaded model: its preprocessors found once, each pipeline built once."""

    def __init__(self, model: Any, preprocessor: Any, folder: str, common: dict[str, Any], base_model: bool) -> None:
        self.model, self.base_model = model, base_model
        self.parts = components(folder, preprocessor, common)
        self.pipelines: dict[TaskName, Any] = {}
        self.limit = context_limit(model.config, self.parts.tokenizer)

    def run(
        self,
        task: TaskName,
        items: list[dict[str, Any]],
        options: TaskConfig,
        params: GenerationConfig,
        seed: int | None,
    ) -> list[Answer]:
        model, tokenizer = self.model, self.parts.tokenizer
        items = [self.decode(item) for item in items]
        if task in PIPELINES:
            if task not in self.pipelines:
                self.pipelines[task] = make_pipeline(task, model, self.parts, options)
            answers = run_pipeline(self.pipelines[task], task, items, options, params)
            for item, a in zip(items, answers, strict=True):
                a.audio_s = item.get("audio_s")
            return answers
        if task == TaskName.caption:
            return caption(model, self.parts, items, params, seed)
        if tokenizer is None:
            raise ValueError(f"task={task} needs a tokenizer, and the model folder has none")
        if task == TaskName.embed:
            return embed_items(model, tokenizer, items, options, self.limit)
        if task == TaskName.qa:
            return question_answer(model, tokenizer, items, self.limit)
        if task == TaskName.rerank and self.base_model:
            return [rerank_embed(model, tokenizer, i, options, self.limit) for i in items]
        if task == TaskName.rerank:
            return [rerank_cross(model, tokenizer, i, self.limit) for i in items]
        raise ValueError(f"task={task} is not a non-generation task of the Transformers backend")

    def decode(self, item: dict[str, Any]) -> dict[str, Any]:
        """The item with its image as a PIL image and its audio as samples at the feature extractor's rate."""
        item = dict(item)
        if "image" in item:
            item["image"] = media.load_image(item["image"])
        if "audio" in item:
            extractor = self.parts.feature_extractor
            rate = int(getattr(extractor, "sampling_rate", 16000))
            item["audio"], item["sampling_rate"] = media.load_audio(item["audio"], rate), rate
            item["audio_s"] = len(item["audio"]) / rate
        return item


def context_limit(config: Any, tokenizer: Any) -> int | None:
    """The longest input the model takes, in tokens (its position table, or the tokenizer's limit)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None
