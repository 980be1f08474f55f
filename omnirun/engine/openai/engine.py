"""`OpenAIEngine`: text generation by an OpenAI-compatible server someone else runs (vLLM, SGLang, TGI,
llama.cpp's server, OpenAI), at `model.endpoint`, for the model it serves as `model.name`.

Each text of a `generate` call is one streamed request, `task.concurrency` of them in flight (a thread pool);
a request that fails with 429, a 5xx status, a dropped connection or a timeout is retried `task.retries` times
with backoff, then it is its record's error. `task.chat_template` decides what is sent: conversations (task=chat,
`messages` records, and plain prompts under `auto` or `always`) go to `/chat/completions` as messages, where
the server applies the model's template; `never` sends plain prompts to `/completions` as they are.
Nothing is loaded here: no weights, no tokenizer (prompt sizes are estimated; nothing is clipped locally).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Self

from omnirun.config import (
    Device,
    DType,
    GenerationConfig,
    HardwareConfig,
    ModelConfig,
    ModelType,
    TaskConfig,
    TaskName,
)
from omnirun.engine.base import Answer, Completion, ConvenienceAPI, MemoryReport, ParameterCount
from omnirun.engine.openai import body, embeddings
from omnirun.engine.openai.client import Endpoint, RequestFailed, with_retries
from omnirun.engine.openai.stream import ServerStream, complete
from omnirun.errors import ConfigError, ModelLoadError, OmnirunError
from omnirun.hardware import MB, HardwareInfo, HardwarePlan, Placement

log = logging.getLogger(__name__)

NAME = "openai"
BATCH_PER_WORKER = 4
"""`task.batch_size=auto` hands a `generate` call this many records per request in flight, so that a slow
request holds back few others (a call returns when its last request does)."""
GENERATION_TASKS = frozenset({TaskName.generate, TaskName.chat, TaskName.batch, TaskName.stream})
_TASK = TaskConfig()
"""The `task` group's defaults (`concurrency`, `retries`, `timeout_s`), written once in omnirun.config."""


@dataclass(frozen=True)
class ServerOptions:
    """How requests are sent: `task.concurrency`, `task.retries`, `task.timeout_s`."""

    concurrency: int = _TASK.concurrency
    retries: int = _TASK.retries
    timeout_s: float = _TASK.timeout_s

    def __post_init__(self) -> None:
        for key, ok, rule in (
            ("concurrency", isinstance(self.concurrency, int) and self.concurrency >= 1, "must be an integer >= 1"),
            ("retries", isinstance(self.retries, int) and self.retries >= 0, "must be an integer >= 0"),
            ("timeout_s", isinstance(self.timeout_s, int | float) and self.timeout_s > 0, "must be > 0"),
        ):
            if not ok:
                raise ConfigError(f"task.{key} {rule}, got {getattr(self, key)!r}")


class PartlyFailed(RequestFailed):
    """Some requests of a `generate` call failed; the others' completions are kept for the record-by-record
    retry that follows (`tasks.batching`), so that nothing is sent twice."""


class OpenAIEngine(ConvenienceAPI):
    """The `openai` backend's engine (`engine.build` makes one); `configure` sets the task's request options."""

    model_type: ModelType | None = ModelType.causal_lm
    tokenizer: Any = None
    """No tokenizer: the server has it."""
    max_context: int | None = None
    """Unknown here: the server refuses a request that does not fit (that record's error row)."""
    source: Any = None

    def __init__(
        self,
        model: ModelConfig,
        hardware: HardwareConfig,
        *,
        placement: Placement | None = None,
        info: HardwareInfo | None = None,
        generation: GenerationConfig | None = None,
        batch_size: int | None = None,
        concurrency: int = _TASK.concurrency,
        retries: int = _TASK.retries,
        timeout_s: float = _TASK.timeout_s,
    ) -> None:
        if not model.endpoint:
            raise ConfigError(
                f"hardware.backend={NAME} needs model.endpoint=http(s)://host:port/v1, the server's base URL, and "
                f"model.name the model it serves; model.endpoint is not set (model.name={model.name!r})"
            )
        self.model_config, self.placement = model, placement
        self.default_generation = generation or GenerationConfig()
        body.refuse(self.default_generation)
        self.batch_size = batch_size
        self.options = ServerOptions(concurrency, retries, timeout_s)
        self.plan: HardwarePlan | None = None
        self._endpoint: Endpoint | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._leftover: dict[str, deque[Completion | BaseException]] = {}

    def configure(
        self, *, concurrency: int | None = None, retries: int | None = None, timeout_s: float | None = None
    ) -> None:
        """Set the task's request options (`task.concurrency`, `task.retries`, `task.timeout_s`) before
        `load_model()`; None keeps a value."""
        if self.plan is not None:
            raise RuntimeError("configure() the engine before load_model()")
        now = self.options
        self.options = ServerOptions(
            now.concurrency if concurrency is None else concurrency,
            now.retries if retries is None else retries,
            now.timeout_s if timeout_s is None else timeout_s,
        )

    # ------------------------------------------------------------------------------------------ state
    @property
    def model_name(self) -> str:
        return self.model_config.name

    @property
    def endpoint_url(self) -> str:
        return str(self.model_config.endpoint)

    @property
    def device(self) -> Device:
        return Device.cpu

    @property
    def is_loaded(self) -> bool:
        return self.plan is not None

    def check_task(self, task: str) -> None:
        if task == TaskName.benchmark:
            raise ConfigError(
                f"task=benchmark times generation from token ids of a local tokenizer, and hardware.backend={NAME} "
                "has none; measure a server with task=batch (ttft_ms, tpot_ms, e2e_ms per record in metrics.json)"
            )
        if task not in GENERATION_TASKS and task != TaskName.embed:
            raise ConfigError(
                f"task={task}: hardware.backend={NAME} serves the generation tasks and embed (/v1/embeddings) only; "
                "use hardware.backend=auto for it"
            )

    def load_tokenizer(self) -> Any:
        return None

    def load_model(self) -> Self:
        """Check the server answers (`GET /models`, with the request options' timeout and retries) and make the
        plan; ModelLoadError naming model.endpoint when it does not answer."""
        options = self.options
        endpoint = Endpoint(self.endpoint_url, self.model_config.api_key_env, options.timeout_s)
        try:
            listed = with_retries(lambda: endpoint.get_json("/models"), options.retries)
        except RequestFailed as exc:
            if exc.status is None:  # no answer at all
                raise ModelLoadError(f"{exc}; start the server or fix model.endpoint") from None
            if exc.status != 404:  # a server without the listing may still serve
                raise ModelLoadError(str(exc)) from None
            listed = None
        self._warn_unlisted(listed)
        self._endpoint = endpoint
        self._pool = concurrent.futures.ThreadPoolExecutor(options.concurrency, thread_name_prefix="omnirun-openai")
        self.plan = self._make_plan()
        return self

    def unload_model(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close_all()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._endpoint = self._pool = None
        self._leftover.clear()
        self.plan = None

    def parameters(self) -> ParameterCount | None:
        return None

    def memory(self) -> MemoryReport:
        import psutil

        return MemoryReport(None, psutil.Process().memory_info().rss / MB, None, None)

    # ------------------------------------------------------------------------------------- generation
    def has_chat_template(self) -> bool:
        return True  # the server applies the model's own template to /chat/completions

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return body.encode_chat(messages)

    def count_tokens(self, text: str, add_special_tokens: bool = True) -> int:
        return body.estimate_tokens(text)

    def argmax_next(self, ids: list[int]) -> list[int]:
        raise OmnirunError(
            f"hardware.backend={NAME} cannot score token ids (a server returns text); use another backend"
        )

    def generate(
        self, texts: list[str], params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> list[Completion]:
        """One streamed request per text, `task.concurrency` in flight, each with a seed of its own (`offset`)."""
        return self._run([body.request(self.model_name, text, params, offset(seed, i)) for i, text in enumerate(texts)])

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        return self._run([body.request_ids(self.model_name, row, params, offset(seed, i)) for i, row in enumerate(ids)])

    def stream_tokens(
        self, text: str, params: GenerationConfig, *, add_special_tokens: bool = True, seed: int | None = None
    ) -> ServerStream:
        endpoint, _ = self._loaded()
        return ServerStream(endpoint, body.request(self.model_name, text, params, seed), self.options.retries)

    def analyze(
        self,
        task: TaskName,
        items: list[dict[str, Any]],
        options: TaskConfig,
        params: GenerationConfig | None = None,
        seed: int | None = None,
    ) -> list[Answer]:
        """task=embed through the server's `/embeddings` (one request per batch); ConfigError for another task."""
        self.check_task(task)
        if task != TaskName.embed:
            raise ConfigError(f"task={task}: hardware.backend={NAME} analyzes with task=embed only")
        endpoint, _ = self._loaded()
        return embeddings.embed(endpoint, self.model_name, items, options, self.options.retries)

    # ---------------------------------------------------------------------------------------- helpers
    def _loaded(self) -> tuple[Endpoint, concurrent.futures.ThreadPoolExecutor]:
        if self._endpoint is None or self._pool is None:
            raise RuntimeError("the engine is not loaded; call load_model() first")
        return self._endpoint, self._pool

    def _run(self, requests: list[body.Request]) -> list[Completion]:
        """Every request in flight (at most `task.concurrency` at once), completions in order. When some fail,
        PartlyFailed: the completions that succeeded are kept, and a later call with only kept requests (the
        record-by-record retry) gets them (or their error) without sending anything again."""
        kept = self._take_leftover(requests)
        if kept is not None:
            return kept
        endpoint, pool = self._loaded()
        retries = self.options.retries
        futures = [pool.submit(with_retries, lambda r=r: complete(endpoint, r), retries) for r in requests]
        outcomes: list[Completion | BaseException] = []
        try:
            for future in futures:
                try:
                    outcomes.append(future.result())
                except Exception as exc:  # about this request only: the others go on
                    outcomes.append(exc)
        except BaseException:  # Ctrl-C: stop the requests in flight, not only the ones queued
            for future in futures:
                future.cancel()
            endpoint.close_all()
            raise
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if not failed:
            return [o for o in outcomes if isinstance(o, Completion)]
        if len(requests) == 1:
            raise failed[0]
        for request, outcome in zip(requests, outcomes, strict=True):
            self._leftover.setdefault(request.key, deque()).append(outcome)
        raise PartlyFailed(f"{len(failed)} of {len(requests)} requests failed; the first: {failed[0]}")

    def _take_leftover(self, requests: list[body.Request]) -> list[Completion] | None:
        if not self._leftover:
            return None
        wanted: dict[str, int] = {}
        for request in requests:
            wanted[request.key] = wanted.get(request.key, 0) + 1
        if any(len(self._leftover.get(key, ())) < n for key, n in wanted.items()):
            self._leftover.clear()  # another call: what a failed batch left is no longer asked for
            return None
        outcomes = [self._leftover[r.key].popleft() for r in requests]
        self._leftover = {k: v for k, v in self._leftover.items() if v}
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise failed[0]
        return [o for o in outcomes if isinstance(o, Completion)]

    def _warn_unlisted(self, listed: Any) -> None:
        data = listed.get("data") if isinstance(listed, dict) else None
        if not isinstance(data, list):
            return
        served = [str(m.get("id")) for m in data if isinstance(m, dict)]
        if self.model_name not in served:
            shown = ", ".join(served[:10]) + (", ..." if len(served) > 10 else "")
            log.warning(
                "model.name=%r is not among the models model.endpoint=%s lists (%s); requests may be refused",
                self.model_name,
                self.endpoint_url,
                shown or "none",
            )

    def _make_plan(self) -> HardwarePlan:
        options, url = self.options, self.endpoint_url
        where = f"the server at model.endpoint={url}"
        reasons = {
            "backend": self.placement.backend_reason if self.placement else f"{NAME} as requested",
            "device": f"{where} runs the model; this process only sends requests and reads their streams",
            "dtype": f"{where} chose it (not visible to the client)",
            "batch_size": (
                f"{BATCH_PER_WORKER} x task.concurrency={options.concurrency} records per call for "
                f"task.batch_size=auto, {options.concurrency} requests in flight at once; "
                f"task.retries={options.retries}, task.timeout_s={options.timeout_s:g}"
            ),
        }
        batch = BATCH_PER_WORKER * options.concurrency
        return HardwarePlan(Device.cpu, DType.auto, None, batch, reasons=reasons, backend=NAME)


def offset(seed: int | None, i: int) -> int | None:
    """The seed of text `i` of a call seeded `seed` (the task's seed plus the batch's first record's position):
    distinct across texts and batches (below 2**31, which every server takes), so that two records with the same
    prompt are sampled differently, as they are on the local backends, and a rerun samples them the same."""
    return None if seed is None else (seed * 65_536 + i) % 2**31
