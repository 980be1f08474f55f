"""Typed schemas for every config group, registered in Hydra's ConfigStore (the values of closed sets are in
`omnirun.choices`).

The raw Hydra/OmegaConf tree stops at the CLI: it is turned into a `RunConfig` once, validated once, and
only these dataclasses (or narrower pieces of them) travel further down.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omnirun import plugins, structured
from omnirun.benchmark_config import BenchmarkConfig
from omnirun.checks import (
    GENERATION_TYPES,
    MAX_THREADS,
    check_max_memory,
    check_type,
    parse_choice,
)
from omnirun.choices import Backend as Backend  # re-exported: the built-in backends' names
from omnirun.choices import (
    Device,
    DType,
    EmbeddingsFormat,
    ExportFormat,
    ModelInit,
    ModelType,
    OnError,
    Quantization,
    Reasoning,
    TaskName,
)
from omnirun.cluster.config import ClusterConfig
from omnirun.errors import ConfigError
from omnirun.plugins import Capability
from omnirun.task_config import TaskConfig as TaskConfig  # re-exported: the task group's base schema
from omnirun.task_config import of_task_class

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DEVICE_NAME = re.compile(r"^(cpu|mps|cuda(:\d+)?|\d+)$")


@dataclass
class ModelConfig:
    name: str = "smollm2"
    """A short name (`smollm2`, `gpt2`, `qwen`, `t5-small`, ...), a hub id, a local model folder or a `.gguf` file."""
    model_type: str | None = None
    """`causal-lm` or `seq2seq`; detected from the model config when null."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to load."""
    gguf_file: str | None = None
    """Name of a `.gguf` file inside `name` (a hub repo or folder) to load from."""
    trust_remote_code: bool = False
    """Run Python code shipped with the model. Off unless set explicitly."""
    allow_pickle: bool = False
    """Allow pickle-based `.bin` checkpoints. Off: only safetensors and GGUF weights load."""
    attn_implementation: str | None = None
    """`sdpa`, `eager`, `flash_attention_2`, ...; null keeps the Transformers default."""
    low_cpu_mem_usage: bool = True
    """Load weights without a second full copy in memory."""
    cache_dir: str | None = None
    """Where hub downloads go; null uses the Hugging Face default."""
    config_overrides: Any = None
    """Values set on the model's config (`AutoConfig`) before loading, e.g. {hidden_dropout_prob: 0.2,
    max_position_embeddings: 4096, rope_scaling: {rope_type: linear, factor: 2.0}}; each key must exist on
    that config. (Typed `Any` in the schema: OmegaConf cannot merge a mapping from the command line into an
    optional dict that is null; `validate` checks it is a mapping.)"""
    num_labels: int | None = None
    """Output labels of a classification head (the document's `num_labels`); null keeps the checkpoint's."""
    init: ModelInit = ModelInit.pretrained
    """`pretrained` loads the weights; `random` builds the architecture from its config with random weights
    (no weights needed: a config.json file or a folder holding one is enough), to benchmark an architecture."""

    endpoint: str | None = None
    """`hardware.backend=openai`: the base URL of an OpenAI-compatible server, e.g. http://localhost:8000/v1
    (vLLM, SGLang, TGI, llama.cpp's server, OpenAI); `name` is then the model name it serves."""
    api_key_env: str = "OPENAI_API_KEY"
    """`hardware.backend=openai`: the environment variable holding the API key (read at run time, never
    written into the run directory); unset or empty: no Authorization header."""

    def validate(self) -> None:
        overrides = self.config_overrides
        if overrides is not None and not (
            isinstance(overrides, Mapping) and all(isinstance(k, str) for k in overrides)
        ):
            raise ConfigError(
                "model.config_overrides must be a mapping of config keys to values, e.g. "
                f"'{{max_position_embeddings: 4096}}', got {overrides!r}"
            )
        if self.num_labels is not None and self.num_labels < 1:
            raise ConfigError(f"model.num_labels must be >= 1 or null, got {self.num_labels}")
        if self.model_type is not None:
            self.model_type = parse_choice("model.model_type", ModelType, self.model_type)
        if not self.name:
            raise ConfigError("model.name must not be empty; use a short name such as smollm2, a hub id or a path")
        if self.api_key_env:
            from omnirun.secrets import declare_secret_variable

            declare_secret_variable(self.api_key_env)  # redacted wherever its value would be written
        if self.endpoint is not None and not re.match(r"^https?://[^\s/]+", self.endpoint):
            raise ConfigError(
                f"model.endpoint must be an http(s) URL such as http://localhost:8000/v1, got {self.endpoint!r}"
            )
        if self.attn_implementation is not None and self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"model.attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)} or null, "
                f"got {self.attn_implementation!r}"
            )


@dataclass
class HardwareConfig:
    backend: str = "auto"
    """An installed backend (`transformers`, `llama.cpp`, `onnxruntime`, `diffusers`, or a plugin's), or `auto`:
    the backend that measured fastest for this model, task and machine (see `hardware.backends`), with its
    reason in the manifest."""
    optimize: bool = True
    """Let `auto` pick measured CPU speed-ups (the llama.cpp backend, decode paths); false keeps plain fp32."""
    device: Device = Device.auto
    """Where to run; `auto` takes CUDA, then MPS, then the CPU."""
    dtype: DType = DType.auto
    """Weight/compute dtype; `auto` is the planner's choice (bf16 on GPUs that support it, else fp16; fp32 on
    the CPU, measured fastest there); `checkpoint` keeps the dtype the weights were saved in (Transformers'
    `torch_dtype="auto"`)."""
    quantization: Quantization | None = None
    """`int8` or `int4` (bitsandbytes); `auto` picks the lightest that fits free memory; null for none. When
    bitsandbytes is missing or the quantized load fails, the model loads unquantized with a warning and the
    reason in the manifest, unless `quantization_strict`."""
    quantization_strict: bool = False
    """Make a quantization that cannot be honoured an error instead of a fallback to no quantization."""
    device_map: Any = None
    """Weight placement across devices: `auto`, `sequential`, `balanced`, or a dict of module -> device."""
    max_memory: Any = None
    """Per-device memory caps for `device_map`, e.g. {0: 20GiB, cpu: 60GiB}."""
    num_threads: int | None = None
    """CPU threads for torch; null keeps torch's default (one per physical core)."""

    def validate(self) -> None:
        if self.backend != plugins.AUTO:
            self.backend = plugins.backend(self.backend).name
        dm = self.device_map
        if isinstance(dm, str) and DEVICE_NAME.match(dm):
            self.device_map = {"": dm}  # the whole model on one device, as `device_map="cpu"` means in Transformers
        elif dm is not None and not isinstance(dm, Mapping) and dm not in DEVICE_MAP_STRATEGIES:
            raise ConfigError(
                f"hardware.device_map must be one of {', '.join(DEVICE_MAP_STRATEGIES)}, a device (cpu, cuda:0, "
                f"mps), a dict or null, got {dm!r}"
            )
        if self.num_threads is not None and not 1 <= self.num_threads <= MAX_THREADS:
            raise ConfigError(
                f"hardware.num_threads must be between 1 and {MAX_THREADS} or null, got {self.num_threads}"
            )
        if self.max_memory is not None:
            self.max_memory = check_max_memory(self.max_memory)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 100
    """Most tokens to generate per prompt."""
    min_new_tokens: int | None = None
    """Fewest tokens to generate (end-of-sequence is suppressed until then)."""
    temperature: float = 0.7
    """Sampling temperature (0.0-2.0); higher is more random. Ignored when do_sample is false."""
    top_p: float = 0.9
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p, in (0, 1]."""
    top_k: int = 50
    """Keep only the k most likely tokens; 0 disables it."""
    repetition_penalty: float = 1.0
    """Penalty for tokens already present (>1.0 repeats less)."""
    do_sample: bool = True
    """Sample (true) or decode greedily / by beam search (false)."""
    num_beams: int = 1
    """Beam search width; 1 means no beam search."""
    early_stopping: bool = False
    """Stop beam search as soon as num_beams finished candidates exist."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size; 0 disables it."""
    length_penalty: float = 1.0
    """Exponent on the length in beam scores (>0 favours longer outputs)."""
    response_format: Any = None
    """Constrained output, as in OpenAI's API: `{type: json_object}`, `{type: json_schema, json_schema: {name,
    schema, strict}}` or `{type: regex, pattern: ...}`; null: free text (see omnirun/structured.py)."""
    reasoning: Reasoning = Reasoning.auto
    """A reasoning model's thinking (`<think>...</think>` and the family's other delimiters): `split` writes it to
    the row's `reasoning` field and the answer to `output`; `strip` drops it; `keep` leaves the text as generated;
    `auto` is `split` for a model whose chat template has a thinking block, else `keep` (see omnirun/reasoning.py).
    A response_format applies to the answer, after the thinking ends."""

    def validate(self, prefix: str = "generation.") -> None:
        """Raise ConfigError (a ValueError) naming the parameter and the value when one is out of range."""
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1", self.max_new_tokens),
            (
                self.min_new_tokens is None or 0 <= self.min_new_tokens <= self.max_new_tokens,
                "min_new_tokens",
                "must be between 0 and max_new_tokens",
                self.min_new_tokens,
            ),
            (0.0 <= self.temperature <= 2.0, "temperature", "must be between 0.0 and 2.0", self.temperature),
            (0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]", self.top_p),
            (self.top_k >= 0, "top_k", "must be >= 0", self.top_k),
            (self.repetition_penalty > 0.0, "repetition_penalty", "must be > 0", self.repetition_penalty),
            (self.num_beams >= 1, "num_beams", "must be >= 1", self.num_beams),
            (
                self.no_repeat_ngram_size >= 0,
                "no_repeat_ngram_size",
                "must be >= 0",
                self.no_repeat_ngram_size,
            ),
        ]
        for ok, name, rule, value in checks:
            if not ok:
                raise ConfigError(f"{prefix}{name} {rule}, got {value!r}")
        if self.do_sample and self.temperature == 0.0:
            raise ConfigError(f"{prefix}temperature=0 with do_sample=true is undefined; set do_sample=false for greedy")
        if self.response_format is not None:
            self.response_format = structured.check_response_format(self.response_format, f"{prefix}response_format")
            if self.num_beams > 1:
                raise ConfigError(
                    f"{prefix}response_format cannot be enforced under beam search (num_beams={self.num_beams}); "
                    "set num_beams=1"
                )

    def with_overrides(self, overrides: dict[str, Any], prefix: str = "generation.") -> GenerationConfig:
        """A copy with some fields replaced (e.g. per-record overrides), validated."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                f"unknown generation parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        for name, value in overrides.items():
            check_type(f"{prefix}{name}", value, GENERATION_TYPES[name])
        new = dataclasses.replace(self, **overrides)
        new.validate(prefix)
        return new


@dataclass
class InputConfig:
    path: str | None = None
    """A JSONL file: one object a line with `prompt` or `messages`, optional `id` and generation overrides."""
    dataset: str | None = None
    """A dataset: a `save_to_disk` folder, a local data file/folder (parquet, json, csv), or a hub name."""
    split: str = "train"
    """Dataset split to read."""
    field: str = "prompt"
    """Dataset column holding the prompt."""
    messages_field: str = "messages"
    """Dataset column holding chat messages (used by the chat task when present)."""
    id_field: str = "id"
    """Column/key holding a record id; the row or line number when absent."""
    template: str | None = None
    """A prompt template filled from the record's columns, e.g. 'Question: {question}\\nAnswer:'."""
    limit: int | None = None
    """Read at most this many records."""
    streaming: bool = False
    """Read a dataset as a stream (a hub dataset too big to download whole), record by record."""
    prompt: str | None = None
    """A single prompt from the command line, used when no path or dataset is given."""
    on_error: OnError = OnError.skip
    """A bad record: `skip` writes an error line and goes on; `fail` stops before the model loads."""
    max_image_pixels: int = 89_478_485
    """An image's most pixels (width x height, read from its header before decoding): PIL's own
    decompression-bomb limit, about 0.35 GB decoded to RGB. A larger image is its record's error row."""
    max_audio_s: float = 3600.0
    """An audio clip's longest duration in seconds (frames / sample rate, from its header before decoding): an
    hour is 230 MB of float32 at 16 kHz. A longer clip (or a header claiming 1 Hz) is its record's error row."""
    fetch_timeout_s: float = 60.0
    """How long reading one image or audio URL may take in all (connection, headers and body)."""
    max_fetch_mb: float = 256.0
    """The most megabytes one image or audio URL may send (and never more than the memory free)."""

    def validate(self) -> None:
        if self.path is not None and self.dataset is not None:
            raise ConfigError("input.path and input.dataset are both set; choose one (set the other to null)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"input.limit must be >= 1 or null, got {self.limit}")
        for key in ("max_image_pixels", "max_audio_s", "fetch_timeout_s", "max_fetch_mb"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise ConfigError(f"input.{key} must be a positive number, got {value!r}")


@dataclass
class OutputConfig:
    root: str = "outputs"
    """Where run directories go: <root>/<task>/<model>/<timestamp>/."""
    openai_batch: bool | None = None
    """Also write batch_output.jsonl in the OpenAI Batch API format; null: when the input is in that format."""
    dataset: bool = False
    """Also write the results as a Hugging Face dataset (dataset/, save_to_disk) and outputs.parquet."""
    push_to_hub: str | None = None
    """A hub repo id to push that dataset to (needs output.dataset=true and a hub token)."""
    embeddings: EmbeddingsFormat = EmbeddingsFormat.jsonl
    """task=embed: `npy` also writes embeddings.npy (one row per record, input order; error rows are NaN)."""


@dataclass
class ExportConfig:
    format: ExportFormat = ExportFormat.safetensors
    """`safetensors` (model and tokenizer, as `save_pretrained` writes them) or `onnx` (optimum's exporter)."""
    path: str | None = None
    """The folder to write; null: `export/` inside the run directory."""
    push_to_hub: str | None = None
    """A hub repo id to push the export to (needs network and a token)."""


@dataclass
class TrackingConfig:
    backend: str | None = None
    """`mlflow` to log params and metrics of every run; null for none."""
    uri: str | None = None
    """MLflow tracking URI; null: a file store in <output.root>/mlruns."""
    experiment: str = "omnirun"
    """MLflow experiment name."""

    def validate(self) -> None:
        if self.backend not in (None, "mlflow"):
            raise ConfigError(f"tracking.backend must be mlflow or null, got {self.backend!r}")
        if self.backend == "mlflow":
            import importlib.util

            if importlib.util.find_spec("mlflow") is None:
                raise ConfigError('tracking=mlflow needs MLflow: pip install "omnirun[tracking]" (mlflow-skinny)')


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Where the records are processed: this machine (`cluster=local`) or a Ray cluster (`cluster=ray`)."""
    seed: int = 0
    """Seed for every random generator (sampling is reproducible with a fixed seed)."""
    resume: str | None = None
    """Continue an interrupted run: its directory, or `latest` (the newest run of this task and model). In a
    sweep (`-m`): a sweep directory or `latest`; finished jobs are skipped, unfinished ones continue."""
    resume_force: bool = False
    """Resume even when the config or the input differ from the interrupted run's."""
    debug: bool = False
    """Show full tracebacks instead of one-line errors."""

    def validate(self) -> RunConfig:
        """Check every group and the combinations between them; return self for chaining."""
        self.model.validate()
        self.hardware.validate()
        self.generation.validate()
        self.task = of_task_class(self.task)  # RunConfig() holds the base class; task=<name> its own
        self.task.validate()
        self.input.validate()
        self.benchmark.validate()
        self.tracking.validate()
        self.cluster.validate()
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be between 0 and 2**32 - 1, got {self.seed}")
        if self.output.push_to_hub and not self.output.dataset:
            raise ConfigError("output.push_to_hub needs output.dataset=true (the dataset is what gets pushed)")
        if self.generation.response_format is not None and plugins.task(self.task.name).needs != Capability.generate:
            raise ConfigError(
                f"generation.response_format constrains generated text and task={self.task.name} does not apply it; "
                "use it with task=generate, chat, batch or stream (or unset it)"
            )
        if self.task.name == TaskName.stream and self.generation.num_beams > 1:
            raise ConfigError(
                f"task=stream cannot use beam search (generation.num_beams={self.generation.num_beams}); "
                "set generation.num_beams=1 or use task=generate"
            )
        return self
