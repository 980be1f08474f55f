"""The built-in tasks, one `TaskSpec` each: what they read, what they need from the engine, how they run.

They register through the `omnirun.tasks` entry points in pyproject.toml, exactly as a plugin's tasks do; the
core finds every task through `omnirun.plugins.tasks()`. A new Transformers pipeline task is a line in
`engine.hf.analyze.PIPELINES`, a spec here and its entry point.
"""

from __future__ import annotations

from omnirun.inputs.openai import EMBEDDINGS_URL, RERANK_URL, SCORE_URL
from omnirun.inputs.records import InputSpec
from omnirun.plugins import Capability, TaskSpec
from omnirun.task_config import (
    DetectConfig,
    EmbedConfig,
    GenerateConfig,
    ImageConfig,
    QAConfig,
    ScoreConfig,
    TaskConfig,
    TokenClassifyConfig,
    TopKConfig,
    TranscribeConfig,
)
from omnirun.tasks.analysis import run_analysis
from omnirun.tasks.benchmark import run_benchmark
from omnirun.tasks.export import run_export
from omnirun.tasks.generate import run_chat, run_generate
from omnirun.tasks.records import RecordsTask
from omnirun.tasks.score import run_score
from omnirun.tasks.stream import run_stream

TEXT = ("prompt",)


def analysis(
    name: str, inputs: InputSpec, summary: str, config: type[TaskConfig] = TaskConfig, **defaults: object
) -> TaskSpec:
    """A task beyond generation: the records' fields, batched through `engine.analyze`, 8 a batch by default."""
    spec = InputSpec(inputs.required, inputs.optional, inputs.urls, name)
    defaults = {"batch_size": 8, **defaults}
    return TaskSpec(name, RecordsTask(run_analysis), Capability.analyze, spec, summary, defaults, config)


GENERATE = TaskSpec("generate", RecordsTask(run_generate), summary="one completion per record", config=GenerateConfig)
BATCH = TaskSpec(
    "batch",
    RecordsTask(run_generate),
    summary="batched generation, prompts grouped by length",
    defaults={"batch_size": "auto"},
    config=GenerateConfig,
)
CHAT = TaskSpec(
    "chat",
    RecordsTask(run_chat, needs_chat_template=True),
    summary="conversations through the chat template",
    config=GenerateConfig,
)
STREAM = TaskSpec(
    "stream", RecordsTask(run_stream, windowed=False), summary="token by token, TTFT and TPOT", config=GenerateConfig
)
BENCHMARK = TaskSpec("benchmark", run_benchmark, summary="the engine on a controlled workload")
EXPORT = TaskSpec("export", run_export, Capability.export, summary="save the model as safetensors or ONNX")

EMBED = analysis("embed", InputSpec(TEXT, urls=(EMBEDDINGS_URL,)), "one vector per text", EmbedConfig, batch_size=32)
CLASSIFY = analysis(
    "classify", InputSpec(TEXT, ("text_pair",)), "text (pair) classification", TopKConfig, batch_size=32
)
TOKEN_CLASSIFY = analysis(
    "token_classify", InputSpec(TEXT), "token classification (NER)", TokenClassifyConfig, batch_size=32
)
QA = analysis("qa", InputSpec(("question", "context")), "extractive question answering", QAConfig, batch_size=16)
FILL_MASK = analysis("fill_mask", InputSpec(TEXT), "the masked token(s) of a text", TopKConfig, batch_size=32)
RERANK = analysis(
    "rerank",
    InputSpec(("query", "documents"), ("top_n",), urls=(SCORE_URL, RERANK_URL)),
    "documents by relevance",
    EmbedConfig,
    batch_size=1,
)
IMAGE_CLASSIFY = analysis("image_classify", InputSpec(("image",)), "image classification", TopKConfig, batch_size=16)
DETECT = analysis("detect", InputSpec(("image",)), "object detection", DetectConfig)
SEGMENT = analysis("segment", InputSpec(("image",)), "image segmentation")
AUDIO_CLASSIFY = analysis("audio_classify", InputSpec(("audio",)), "audio classification", TopKConfig)
TRANSCRIBE = analysis("transcribe", InputSpec(("audio",)), "speech recognition", TranscribeConfig, batch_size=1)
CAPTION = analysis("caption", InputSpec(("image",), TEXT), "image captioning")
IMAGE = analysis("image", InputSpec(TEXT, ("negative_prompt",)), "text to image", ImageConfig, batch_size=1)
SCORE = TaskSpec(
    "score",
    run_score,
    needs=None,
    summary="outputs scored against references, no model (omnirun.scoring)",
    config=ScoreConfig,
    reads_input=False,
)
