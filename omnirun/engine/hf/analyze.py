"""The non-generation tasks on a loaded Transformers model: embeddings, classification, NER, extractive QA,
fill-mask, reranking, image classification / detection / segmentation, audio classification, speech
recognition and captioning.

Each takes a batch of items (a record's fields, with images and audio already decoded) and returns one `Answer`
per item, in order. Pre- and post-processing are Transformers' own pipelines wherever one exists
(`text-classification`, `token-classification`, `fill-mask`, `image-classification`, `object-detection`,
`image-segmentation`, `audio-classification`, `automatic-speech-recognition`). Written here instead, and why:
- `embed`: the `feature-extraction` pipeline returns unpooled per-token states as nested Python lists, one
  text at a time; pooling a padded batch on tensors is a few lines and many times faster.
- `qa`: Transformers 5 has no question-answering pipeline; `encoders.question_answer` decodes as Transformers
  4's did (384-token windows overlapping by 128, [CLS] in the softmax, answers of at most 15 tokens widened to
  whole words), batched, with the token types the tokenizer gives.
- `rerank`: a cross-encoder's relevance logit per (query, document) pair, or cosine similarity of embeddings.
- `caption`: the processor plus `generate`, so captions get the usual generation fields and metrics.
Rule: every answer equals the reference's (the pipeline, or the model called on one input) within float noise,
whatever the batch; `tests/differential/` checks it. caption and transcribe decode as the pipelines do unless
the run asks otherwise (`pipeline_generation`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, fields
from typing import Any

from omnirun import rundir
from omnirun.config import GenerationConfig, TaskConfig, TaskName
from omnirun.engine.base import Answer, Completion
from omnirun.engine.hf.bounds import check_audio_forward, text_tokens
from omnirun.engine.hf.encoders import embed_items, question_answer, rerank_cross, rerank_embed
from omnirun.engine.hf.loading import position_limit
from omnirun.errors import InputError
from omnirun.inputs import media
from omnirun.task_config import DetectConfig, QAConfig, TokenClassifyConfig, TopKConfig, TranscribeConfig, options_as

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

TEXT_PIPELINES = (TaskName.classify, TaskName.token_classify, TaskName.fill_mask)
"""The pipelines that take a text whole: one longer than the model's context is the record's error."""


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


def make_pipeline(task: TaskName, model: Any, parts: Components) -> Any:
    """The Transformers pipeline for `task` on the loaded model and its preprocessors."""
    import transformers

    build: Any = transformers.pipeline  # typed by overloads on literal task names; ours is a str
    return build(PIPELINES[task], model=model, **parts.pipeline_kwargs())


def call_options(task: TaskName, options: TaskConfig, item: dict[str, Any] | None = None) -> dict[str, Any]:
    """The per-call arguments of a task's pipeline."""
    if task in (TaskName.classify, TaskName.fill_mask, TaskName.image_classify, TaskName.audio_classify):
        return {"top_k": options_as(options, TopKConfig).top_k}
    if task == TaskName.token_classify:  # per call: a pipeline built for one strategy serves every other one
        return {"aggregation_strategy": str(options_as(options, TokenClassifyConfig).aggregation)}
    if task == TaskName.detect:
        return {"threshold": options_as(options, DetectConfig).threshold}
    if task == TaskName.segment:
        return {"subtask": "semantic"}
    if task == TaskName.transcribe:
        out: dict[str, Any] = {}
        chunk = options_as(options, TranscribeConfig).chunk_length_s
        if chunk and item and item["audio_s"] > chunk:
            out["chunk_length_s"] = chunk
        return out
    return {}


def run_pipeline(
    pipe: Any,
    task: TaskName,
    items: list[dict[str, Any]],
    options: TaskConfig,
    params: GenerationConfig,
    limit: int | None = None,
) -> list[Answer]:
    """One pipeline call over the batch (transcribe: one call per item, as chunking depends on its length).
    A text over `limit` tokens (the model's context) is refused first (`text_tokens`)."""
    if task == TaskName.transcribe:
        return [transcribe(pipe, item, options, params) for item in items]
    if len(items) > 1 and pads_change_answers(pipe.model, task, items):
        return [a for item in items for a in run_pipeline(pipe, task, [item], options, params, limit)]
    counts = text_tokens(pipe.tokenizer, items, limit) if pipe.tokenizer is not None and task in TEXT_PIPELINES else []
    inputs = [pipeline_input(task, item) for item in items]
    kwargs = call_options(task, options)
    # a pipeline given a one-element list unwraps some outputs and not others: call it on the input itself
    outputs = pipe(inputs, batch_size=len(inputs), **kwargs) if len(inputs) > 1 else [pipe(inputs[0], **kwargs)]
    answers = [answer(task, out) for out in outputs]
    for a, n in zip(answers, counts, strict=False):
        a.input_tokens = n
    return answers


def pads_change_answers(model: Any, task: TaskName, items: list[dict[str, Any]]) -> bool:
    """Whether a batch of these items would not give each item its own answer: clips of different lengths on
    a wav2vec2-style model whose feature encoder normalizes over time (`feat_extract_norm=group`), which sees
    the padding (its feature extractors send no attention mask for that reason)."""
    if task != TaskName.audio_classify or getattr(model.config, "feat_extract_norm", None) != "group":
        return False
    return len({len(item["audio"]) for item in items}) > 1


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
        return Answer({"labels": labels}, images={rundir.MASKS: [s["mask"] for s in out]})
    raise ValueError(f"no pipeline answer for task={task}")


def transcribe(pipe: Any, item: dict[str, Any], options: TaskConfig, params: GenerationConfig) -> Answer:
    """Speech to text; long audio in chunks; `chunks` with (start, end) seconds when timestamps are asked."""
    kwargs = call_options(TaskName.transcribe, options, item)
    ctc = getattr(pipe, "type", "") in ("ctc", "ctc_with_lm")
    timestamps = options_as(options, TranscribeConfig).return_timestamps
    if timestamps:
        kwargs["return_timestamps"] = "word" if ctc else True
    if not ctc:  # a sequence-to-sequence model (Whisper) generates: see `pipeline_generation`
        kwargs["generate_kwargs"] = {"generation_config": pipeline_generation(pipe.model, pipe.tokenizer, params)}
    start = time.perf_counter()
    out = pipe({"raw": item["audio"], "sampling_rate": item["sampling_rate"]}, **kwargs)
    text = str(out["text"])
    result: dict[str, Any] = {}
    if timestamps:
        result["chunks"] = [
            {"text": str(c["text"]), "timestamp": [None if t is None else float(t) for t in c["timestamp"]]}
            for c in out.get("chunks", [])
        ]
    tokens = len(pipe.tokenizer(text, add_special_tokens=False)["input_ids"]) if pipe.tokenizer is not None else 0
    completion = Completion(text, 0, tokens, "stop", time.perf_counter() - start)  # CTC/Whisper emit no EOS we count
    return Answer(result, completion=completion)


DEFAULT_GENERATION = GenerationConfig()
SAMPLING = ("temperature", "top_p", "top_k")


def pipeline_generation(model: Any, tokenizer: Any, params: GenerationConfig) -> Any:
    """caption and transcribe: the model's own generation config, as Transformers' pipelines decode with it
    (greedy, the model's length limit, unless the checkpoint says otherwise), plus each run setting that differs
    from the generation defaults; a model that sets no length gets `generation.max_new_tokens` (100), not
    Transformers' model-agnostic 20 tokens. Sampling takes a sampling setting (`generation.temperature`,
    `top_p`, `top_k`; `generation=creative`) while `do_sample` stays true; `generation.do_sample=false` forces
    greedy."""
    config = copy.deepcopy(model.generation_config)
    changed = {
        f.name: getattr(params, f.name)
        for f in fields(params)
        if f.name != "response_format" and getattr(params, f.name) != getattr(DEFAULT_GENERATION, f.name)
    }
    if params.do_sample and changed.keys() & set(SAMPLING):
        changed.update({"do_sample": True, **{name: getattr(params, name) for name in SAMPLING}})
    if not changed.get("do_sample", config.do_sample):
        changed.update(dict.fromkeys(SAMPLING))
    if config.max_length is None and config.max_new_tokens is None:  # not Transformers' model-agnostic 20
        changed.setdefault("max_new_tokens", params.max_new_tokens)
    config.update(**changed)
    if config.pad_token_id is None and tokenizer is not None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def caption(
    model: Any,
    parts: Components,
    items: list[dict[str, Any]],
    params: GenerationConfig,
    seed: int | list[int] | None,
) -> list[Answer]:
    """Captions (or continuations of `prompt` about the image) from the processor and `generate`; the output
    holds the new tokens only. Prompted items run one at a time (BLIP's `generate` cuts the last column of a
    padded batch), and so do sampled items given one seed each."""
    import torch

    tokenizer, config = parts.tokenizer, model.config
    prompts = [i.get("prompt") for i in items]
    if any(prompts) and config.is_encoder_decoder:
        raise InputError(
            f"the record has a prompt, but model type {config.model_type!r} captions images without one (its "
            "decoder starts from its start token); remove the prompt, or use a model that takes one (BLIP)"
        )
    generation = pipeline_generation(model, tokenizer, params)
    seeds = seed if isinstance(seed, list) else [seed] * len(items)
    if len(items) > 1 and (any(prompts) or (generation.do_sample and len(set(seeds)) > 1)):
        return [a for i, item in enumerate(items) for a in caption(model, parts, [item], params, seeds[i])]
    images = [i["image"] for i in items]
    if parts.processor is not None and any(prompts):
        enc = parts.processor(images=images, text=[p or "" for p in prompts], return_tensors="pt", padding=True)
    elif parts.image_processor is not None:
        enc = parts.image_processor(images=images, return_tensors="pt")
    else:
        raise ValueError("the model has no image processor (preprocessor_config.json) to read images with")
    enc = {k: v.to(model.device) for k, v in enc.items() if hasattr(v, "to")}
    prompt_len = int(enc["input_ids"].shape[1]) if "input_ids" in enc else 0
    if seeds[0] is not None:
        torch.manual_seed(seeds[0])
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=generation)
    seconds = time.perf_counter() - start
    echo, ends = echoed(config, prompt_len), {tokenizer.eos_token_id}
    if config.model_type == "blip":
        ends.add(config.text_config.sep_token_id)
    answers = []
    for row in out[:, echo:].tolist():
        ids = [t for t in row if t != tokenizer.pad_token_id]
        ended = bool(ids) and ids[-1] in ends
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        prompt_tokens = 0 if config.is_encoder_decoder else prompt_len
        completion = Completion(text, prompt_tokens, len(ids), "stop" if ended else "length", seconds, token_ids=ids)
        answers.append(Answer({}, completion=completion))
    return answers


def echoed(config: Any, prompt_len: int) -> int:
    """How many leading tokens of `generate`'s output are not new: an encoder-decoder's start token; BLIP's
    prompt less its trailing [SEP] (its `generate` drops it; the default prompt is [BOS]); another decoder's
    whole prompt."""
    if config.is_encoder_decoder:
        return 1
    if config.model_type == "blip":
        return (prompt_len or 2) - 1
    return prompt_len


class Analyzer:
    """The non-generation tasks on one loaded model: its preprocessors found once, each pipeline built once."""

    def __init__(self, model: Any, preprocessor: Any, folder: str, common: dict[str, Any], base_model: bool) -> None:
        self.model, self.base_model = model, base_model
        self.parts = components(folder, preprocessor, common)
        self.pipelines: dict[TaskName, Any] = {}
        self.limit = context_limit(model, self.parts.tokenizer)

    def run(
        self,
        task: TaskName,
        items: list[dict[str, Any]],
        options: TaskConfig,
        params: GenerationConfig,
        seed: int | list[int] | None,
    ) -> list[Answer]:
        model, tokenizer = self.model, self.parts.tokenizer
        items = [self.decode(item) for item in items]
        if task in PIPELINES:
            if task not in self.pipelines:
                self.pipelines[task] = make_pipeline(task, model, self.parts)
            if task in (TaskName.audio_classify, TaskName.transcribe):
                check_audio_forward(model, task, items, options)
            answers = run_pipeline(self.pipelines[task], task, items, options, params, self.limit)
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
            qa = options_as(options, QAConfig)
            longest, impossible = qa.max_answer_len, qa.handle_impossible_answer
            return question_answer(
                model,
                tokenizer,
                items,
                self.limit,
                max_answer_len=longest,
                handle_impossible=impossible,
                max_context_chars=qa.max_context_chars,
            )
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
            item["audio_path"] = item["audio"]
            extractor = self.parts.feature_extractor
            rate = int(getattr(extractor, "sampling_rate", 16000))
            item["audio"], item["sampling_rate"] = media.load_audio(item["audio"], rate), rate
            item["audio_s"] = len(item["audio"]) / rate
        return item


def context_limit(model: Any, tokenizer: Any) -> int | None:
    """The longest input the model takes, in tokens: its position table (`loading.position_limit`) or the
    tokenizer's `model_max_length`, whichever is smaller."""
    limit = position_limit(model)
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 1_000_000:
        return declared if limit is None else min(limit, declared)
    return limit
