"""TransformersEngine on real (tiny, random) Transformers models and on the bundled SmolLM2. No mocks."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import torch
import transformers

from omnirun.config import Backend, Device, GenerationConfig, ModelType, Quantization
from omnirun.engine import Completion, MemoryReport, TransformersEngine
from omnirun.engine import source as models

from tiny_models import build_tiny

PROMPTS = [
    "Hello world",
    "What is the capital of france and the capital of germany? Once upon a time",
    "One two three",
]


GREEDY = {"do_sample": False, "max_new_tokens": 12}


MB = 1024**2


def has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return True


needs_bnb = pytest.mark.skipif(not has_bitsandbytes(), reason="bitsandbytes is not importable")


@pytest.fixture(scope="module")
def llama(tiny_llama: Path) -> Iterator[TransformersEngine]:
    with TransformersEngine(str(tiny_llama)) as engine:
        yield engine


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2: Path) -> Iterator[TransformersEngine]:
    with TransformersEngine(str(tiny_gpt2)) as engine:
        yield engine


@pytest.fixture(scope="module")
def t5(tiny_t5: Path) -> Iterator[TransformersEngine]:
    with TransformersEngine(str(tiny_t5)) as engine:
        yield engine


def force_eos_bias(engine: TransformersEngine, bias: float = 1e4) -> None:
    """Give the LM head a bias that makes end-of-sequence win every step (unless a processor suppresses it)."""
    old = engine.model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    head.weight = old.weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[engine.tokenizer.eos_token_id] = bias
    engine.model.lm_head = head


class TestTinyModels:
    def test_infer_str_returns_str(self, llama: TransformersEngine) -> None:
        out = llama.infer("Hello world", **GREEDY)
        assert isinstance(out, str)
        assert out  # the random model does produce some text

    def test_infer_list_returns_list_in_order(self, llama: TransformersEngine) -> None:
        out = llama.infer(PROMPTS, **GREEDY)
        assert isinstance(out, list)
        assert len(out) == len(PROMPTS)
        assert all(isinstance(text, str) for text in out)
        assert llama.infer(PROMPTS[::-1], **GREEDY) == out[::-1]

    @pytest.mark.parametrize("engine_name", ["llama", "gpt2", "t5"])
    def test_greedy_batch_equals_single_calls(self, engine_name: str, request: pytest.FixtureRequest) -> None:
        engine: TransformersEngine = request.getfixturevalue(engine_name)
        assert engine.tokenizer.padding_side == ("right" if engine_name == "t5" else "left")
        batched = engine.infer(PROMPTS, **GREEDY)
        single = [engine.infer(p, **GREEDY) for p in PROMPTS]
        assert batched == single

    def test_batches_split_by_batch_size(self, tiny_llama: Path, llama: TransformersEngine) -> None:
        engine = TransformersEngine(str(tiny_llama), batch_size=2).load_model()
        try:
            assert engine.infer(PROMPTS, **GREEDY) == llama.infer(PROMPTS, **GREEDY)
        finally:
            engine.unload_model()

    @pytest.mark.parametrize("engine_name", ["llama", "t5"])
    def test_stream_pieces_equal_greedy_infer(self, engine_name: str, request: pytest.FixtureRequest) -> None:
        engine: TransformersEngine = request.getfixturevalue(engine_name)
        for prompt in PROMPTS:
            pieces = list(engine.stream(prompt, **GREEDY))
            expected = engine.infer(prompt, **GREEDY)
            assert expected, "the tiny model should produce visible text, else the comparison is empty"
            assert all(isinstance(p, str) and p for p in pieces)
            assert "".join(pieces) == expected

    @pytest.mark.parametrize("engine_name", ["llama", "t5"])
    @pytest.mark.parametrize(
        "processors",
        [{"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}, {"repetition_penalty": 0.7, "min_new_tokens": 5}],
        ids=["penalty", "no-repeat", "reward+min"],
    )
    def test_stream_applies_the_same_processors(
        self, engine_name: str, processors: dict, request: pytest.FixtureRequest
    ) -> None:
        engine: TransformersEngine = request.getfixturevalue(engine_name)
        gen = {**GREEDY, **processors}
        for prompt in PROMPTS:
            assert "".join(engine.stream(prompt, **gen)) == engine.infer(prompt, **gen)

    def test_stream_completion_matches_generate(self, llama: TransformersEngine) -> None:
        params = llama.params(**GREEDY)
        stream = llama.stream_tokens(PROMPTS[1], params)
        text = "".join(stream)
        done = stream.completion
        assert done is not None
        gen = llama.generate([PROMPTS[1]], params)[0]
        assert (done.text, done.input_tokens, done.output_tokens, done.finish_reason) == (
            gen.text,
            gen.input_tokens,
            gen.output_tokens,
            gen.finish_reason,
        )
        assert text == done.text
        assert len(done.token_times_s) == done.output_tokens
        assert done.token_times_s == sorted(done.token_times_s)
        assert done.ttft_s == done.token_times_s[0] <= done.e2e_s

    def test_stream_min_new_tokens_decoder_only(self, tiny_llama: Path) -> None:
        with TransformersEngine(str(tiny_llama)) as engine:
            force_eos_bias(engine)
            params = engine.params(do_sample=False, max_new_tokens=8, min_new_tokens=2)
            gen = engine.generate([PROMPTS[1]], params)[0]
            stream = engine.stream_tokens(PROMPTS[1], params)
            "".join(stream)
            assert (gen.output_tokens, gen.finish_reason) == (3, "stop")
            assert stream.completion is not None
            assert (stream.completion.output_tokens, stream.completion.finish_reason) == (3, "stop")

    def test_stream_min_new_tokens_seq2seq(self, tiny_t5: Path) -> None:
        with TransformersEngine(str(tiny_t5)) as engine:
            force_eos_bias(engine)
            params = engine.params(do_sample=False, max_new_tokens=8, min_new_tokens=2)
            gen = engine.generate([PROMPTS[1]], params)[0]
            stream = engine.stream_tokens(PROMPTS[1], params)
            text = "".join(stream)
            assert (gen.output_tokens, gen.finish_reason) == (3, "stop")
            assert stream.completion is not None
            assert (stream.completion.output_tokens, stream.completion.finish_reason) == (3, "stop")
            assert text == gen.text

    def test_seq2seq_detected(
        self, t5: TransformersEngine, llama: TransformersEngine, gpt2: TransformersEngine
    ) -> None:
        assert t5.model_type == "seq2seq"
        assert t5.tokenizer.padding_side == "right"
        assert llama.model_type == "causal-lm"
        assert gpt2.model_type == "causal-lm"
        out = t5.infer(PROMPTS, **GREEDY)
        assert len(out) == 3
        assert all(isinstance(text, str) for text in out)

    def test_chat_on_model_with_template(self, llama: TransformersEngine) -> None:
        messages = [{"role": "user", "content": "What is the capital of france?"}]
        assert llama.has_chat_template()
        rendered = llama.render_chat(messages)
        assert "What is the capital of france?" in rendered
        assert rendered.endswith("<|assistant|>\n")
        assert isinstance(llama.chat(messages, **GREEDY), str)

    def test_chat_without_template_raises(self, gpt2: TransformersEngine) -> None:
        assert not gpt2.has_chat_template()
        with pytest.raises(ValueError, match="chat template"):
            gpt2.chat([{"role": "user", "content": "hi"}], **GREEDY)

    @pytest.mark.parametrize(
        "call",
        [
            lambda e: e.infer("hi"),
            lambda e: e.infer(["hi", "there"]),
            lambda e: e.stream("hi"),
            lambda e: e.chat([{"role": "user", "content": "hi"}]),
            lambda e: e.generate(["hi"], e.params()),
            lambda e: e.count_tokens("hi"),
        ],
        ids=["infer", "infer-list", "stream", "chat", "generate", "count_tokens"],
    )
    def test_use_before_load_raises(self, tiny_llama: Path, call: Callable[[TransformersEngine], object]) -> None:
        engine = TransformersEngine(str(tiny_llama))
        with pytest.raises(RuntimeError, match=re.escape("load_model()")):
            call(engine)

    def test_context_manager_loads_and_unloads(self, tiny_llama: Path) -> None:
        engine = TransformersEngine(str(tiny_llama))
        assert not engine.is_loaded
        with engine as loaded:
            assert loaded is engine
            assert engine.is_loaded
            assert engine.model is not None
            assert engine.tokenizer is not None
            assert isinstance(engine.infer("hi", **GREEDY), str)
        assert engine.model is None
        assert engine.tokenizer is None
        with pytest.raises(RuntimeError, match=re.escape("load_model()")):
            engine.infer("hi")

    def test_load_model_twice_is_a_noop(self, llama: TransformersEngine) -> None:
        model = llama.model
        assert llama.load_model() is llama
        assert llama.model is model

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("temperature", -1),
            ("top_p", 0),
            ("top_p", 1.5),
            ("max_new_tokens", 0),
            ("top_k", -1),
            ("num_beams", 0),
            ("repetition_penalty", 0),
            ("no_repeat_ngram_size", -1),
        ],
    )
    @pytest.mark.parametrize("method", ["infer", "stream", "chat"])
    def test_out_of_range_generation_param(
        self, llama: TransformersEngine, method: str, name: str, value: float
    ) -> None:
        args = {"chat": [{"role": "user", "content": "hi"}]}.get(method, "hi")
        with pytest.raises(ValueError, match=rf"\b{name}\b.*{re.escape(repr(value))}$"):
            getattr(llama, method)(args, **{name: value})

    def test_min_new_tokens_above_max_rejected(self, llama: TransformersEngine) -> None:
        with pytest.raises(ValueError, match="min_new_tokens"):
            llama.infer("hi", max_new_tokens=3, min_new_tokens=4)

    def test_zero_temperature_with_sampling_rejected(self, llama: TransformersEngine) -> None:
        with pytest.raises(ValueError, match="temperature=0"):
            llama.infer("hi", temperature=0.0, do_sample=True)

    @pytest.mark.parametrize("method", ["infer", "stream", "chat"])
    def test_unknown_generation_kwarg(self, llama: TransformersEngine, method: str) -> None:
        args = {"chat": [{"role": "user", "content": "hi"}]}.get(method, "hi")
        with pytest.raises(ValueError, match=r"unknown generation parameter.*max_tokens"):
            getattr(llama, method)(args, max_tokens=5)

    def test_beam_search_through_infer(self, llama: TransformersEngine) -> None:
        out = llama.infer(PROMPTS, num_beams=2, do_sample=False, max_new_tokens=8)
        assert len(out) == 3
        assert all(isinstance(text, str) for text in out)
        [completion] = llama.generate([PROMPTS[0]], llama.params(num_beams=2, do_sample=False, max_new_tokens=8))
        assert completion.output_tokens <= 8
        assert completion.ttft_s is None  # no per-token timer under beam search
        assert completion.token_times_s == []

    def test_beam_search_rejected_by_stream(self, llama: TransformersEngine) -> None:
        with pytest.raises(ValueError, match="num_beams=2"):
            llama.stream("hi", num_beams=2, do_sample=False)

    def test_seed_makes_sampling_reproducible(self, llama: TransformersEngine) -> None:
        sample = {"do_sample": True, "temperature": 1.0, "max_new_tokens": 16}
        first = llama.infer(PROMPTS, seed=123, **sample)
        assert llama.infer(PROMPTS, seed=123, **sample) == first
        assert "".join(llama.stream(PROMPTS[0], seed=7, **sample)) == "".join(
            llama.stream(PROMPTS[0], seed=7, **sample)
        )
        others = [llama.infer(PROMPTS, seed=seed, **sample) for seed in (1, 2, 3)]
        assert any(other != first for other in others)  # the seed matters

    def test_max_new_tokens_respected(self, llama: TransformersEngine) -> None:
        for completion in llama.generate(PROMPTS, llama.params(max_new_tokens=5), seed=0):
            assert completion.output_tokens <= 5
        exact = llama.generate(PROMPTS, llama.params(do_sample=False, max_new_tokens=5, min_new_tokens=5))
        for completion in exact:
            assert completion.output_tokens == 5
            assert completion.finish_reason == "length"
        stream = llama.stream_tokens(PROMPTS[0], llama.params(do_sample=False, max_new_tokens=4, min_new_tokens=4))
        "".join(stream)
        assert stream.completion is not None
        assert stream.completion.output_tokens == 4
        assert stream.completion.finish_reason == "length"

    def test_finish_reason_stop_when_eos(self, tiny_llama: Path) -> None:
        with TransformersEngine(str(tiny_llama)) as engine:
            force_eos_bias(engine)
            [completion] = engine.generate(["hi"], engine.params(do_sample=False, max_new_tokens=5))
            assert (completion.output_tokens, completion.finish_reason, completion.text) == (1, "stop", "")

    @pytest.mark.parametrize("engine_name", ["llama", "t5"])
    def test_completion_fields(self, engine_name: str, request: pytest.FixtureRequest) -> None:
        engine: TransformersEngine = request.getfixturevalue(engine_name)
        completions = engine.generate(PROMPTS, engine.params(**GREEDY))
        assert len(completions) == len(PROMPTS)
        for prompt, completion in zip(PROMPTS, completions, strict=True):
            assert isinstance(completion, Completion)
            assert completion.input_tokens == len(engine.tokenizer(prompt)["input_ids"])
            assert completion.input_tokens == engine.count_tokens(prompt)
            assert 1 <= completion.output_tokens <= GREEDY["max_new_tokens"]
            assert completion.finish_reason in ("stop", "length")
            assert completion.ttft_s is not None
            assert 0 < completion.ttft_s <= completion.e2e_s
            times = completion.token_times_s  # one per new token, shared within the batch
            assert len(times) == completion.output_tokens
            assert times == sorted(times)
            assert times[0] == completion.ttft_s
            assert times[-1] <= completion.e2e_s

    def test_memory_reports_footprint(self, llama: TransformersEngine) -> None:
        report = llama.memory()
        assert isinstance(report, MemoryReport)
        params = sum(p.numel() * p.element_size() for p in llama.model.parameters()) / MB
        assert report.model_footprint_mb is not None
        assert report.model_footprint_mb >= params * 0.99
        assert report.rss_mb > 0
        if not torch.cuda.is_available():
            assert report.cuda_allocated_mb is None
            assert report.cuda_reserved_mb is None

    def test_memory_after_unload(self, tiny_llama: Path) -> None:
        engine = TransformersEngine(str(tiny_llama))
        assert engine.memory().model_footprint_mb is None
        engine.load_model()
        footprint = engine.memory().model_footprint_mb
        assert footprint is not None and footprint > 0
        engine.unload_model()
        assert engine.memory().model_footprint_mb is None

    def test_max_context(self, llama: TransformersEngine, gpt2: TransformersEngine) -> None:
        assert llama.max_context == 512
        assert gpt2.max_context == 512

    @pytest.mark.parametrize("engine_name", ["llama", "t5"])
    def test_no_deprecated_transformers_calls(self, engine_name: str, request: pytest.FixtureRequest) -> None:
        """Streaming drives the model's forward itself: it must pass the KV cache the way this Transformers
        wants it (no FutureWarning or DeprecationWarning, which pyproject's filters would otherwise hide, and
        no "`past_key_values`/`cache_params` are deprecated" log line); so must generate."""
        engine: TransformersEngine = request.getfixturevalue(engine_name)
        logged = LogRecords()
        transformers_log = logging.getLogger("transformers")
        transformers_log.addHandler(logged)
        warning_once = getattr(transformers.utils.logging, "warning_once", None)
        if warning_once is not None and hasattr(warning_once, "cache_clear"):
            warning_once.cache_clear()  # a message logged "once" earlier in the session would hide a new one
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", FutureWarning)
                warnings.simplefilter("error", DeprecationWarning)
                pieces = list(engine.stream(PROMPTS[1], **GREEDY))
                sampled = list(engine.stream(PROMPTS[0], do_sample=True, max_new_tokens=4, seed=0))
                text = engine.infer(PROMPTS[1], **GREEDY)
        finally:
            transformers_log.removeHandler(logged)
        assert "".join(pieces) == text and sampled
        assert not [m for m in logged.messages if "deprecated" in m], logged.messages


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_unload_frees_memory(tmp_path: Path) -> None:
    """Loading a ~100 MB model raises RSS by about its size; unloading gives (nearly) all of it back."""
    path = build_tiny("llama-big", tmp_path / "big")
    weights_mb = (path / "model.safetensors").stat().st_size / MB
    assert weights_mb > 50
    rss = lambda: psutil.Process().memory_info().rss / MB  # noqa: E731
    engine = TransformersEngine(str(path))
    engine.load_model().infer("hi", **GREEDY)  # warm-up: one-time allocations (kernels, caches) stay
    engine.unload_model()

    before = rss()
    engine.load_model().infer("hi", **GREEDY)
    loaded = rss()
    engine.unload_model()
    after = rss()

    added = loaded - before
    assert added > 0.5 * weights_mb, f"loading added only {added:.0f} MB for {weights_mb:.0f} MB of weights"
    released = loaded - after
    assert released >= 0.7 * added, f"before {before:.0f} MB, loaded {loaded:.0f} MB, after unload {after:.0f} MB"


class TestManualConfig:
    def test_fp32_on_cpu(self, tiny_llama: Path) -> None:
        with TransformersEngine(str(tiny_llama), auto_config=False, device="cpu", dtype="float32") as engine:
            assert engine.plan is not None
            assert (engine.plan.device, engine.plan.dtype, engine.plan.quantization) == ("cpu", "float32", None)
            assert engine.device == "cpu"
            assert engine.model.dtype == torch.float32
            assert {p.device.type for p in engine.model.parameters()} == {"cpu"}
            assert isinstance(engine.infer("hi", **GREEDY), str)

    def test_bf16(self, tiny_llama: Path) -> None:
        with TransformersEngine(str(tiny_llama), auto_config=False, device="cpu", dtype="bfloat16") as engine:
            assert engine.plan is not None and engine.plan.dtype == "bfloat16"
            assert engine.model.dtype == torch.bfloat16
            assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
            assert isinstance(engine.infer("hi", **GREEDY), str)
            assert "".join(engine.stream("hi", **GREEDY)) == engine.infer("hi", **GREEDY)

    def test_bad_choices_rejected_before_loading(self) -> None:
        with pytest.raises(ValueError, match="dtype must be one of"):
            TransformersEngine("smollm2", dtype="fp8")
        with pytest.raises(ValueError, match="device must be one of"):
            TransformersEngine("smollm2", device="tpu")
        with pytest.raises(ValueError, match="quantization must be one of"):
            TransformersEngine("smollm2", quantization="int3")
        with pytest.raises(ValueError, match="model_type"):
            TransformersEngine("smollm2", model_type="encoder")
        with pytest.raises(ValueError, match="temperature"):
            TransformersEngine("smollm2", generation=GenerationConfig(temperature=-1))

    def test_facade_validates_like_the_cli(self) -> None:
        """The seed keywords become the CLI's typed configs, checked by the same rules."""
        with pytest.raises(ValueError, match="attn_implementation"):
            TransformersEngine("smollm2", attn_implementation="fastest")
        with pytest.raises(ValueError, match="device_map"):
            TransformersEngine("smollm2", device_map="everywhere")
        with pytest.raises(ValueError, match="num_threads"):
            TransformersEngine("smollm2", num_threads=0)
        engine = TransformersEngine("smollm2", model_type="causal-lm", device="cpu", quantization="int8")
        assert engine.model_type == ModelType.causal_lm
        assert (engine.hardware_config.device, engine.hardware_config.quantization) == (Device.cpu, Quantization.int8)
        assert engine.hardware_config.backend == Backend.transformers


@needs_bnb
class TestQuantization:
    @pytest.mark.parametrize("quantization", ["int8", "int4"])
    def test_bitsandbytes_on_cpu(self, tiny_llama: Path, quantization: str) -> None:
        import bitsandbytes as bnb

        layer_type = bnb.nn.Linear8bitLt if quantization == "int8" else bnb.nn.Linear4bit
        with TransformersEngine(str(tiny_llama), quantization=quantization) as engine:
            assert engine.plan is not None and engine.plan.quantization == quantization
            assert "bitsandbytes" in engine.plan.reasons["quantization"]
            assert isinstance(engine.model.model.layers[0].self_attn.q_proj, layer_type)
            out = engine.infer(PROMPTS[:2], **GREEDY)
            assert len(out) == 2
            assert all(isinstance(text, str) and text for text in out)
            assert "".join(engine.stream(PROMPTS[0], **GREEDY)) == engine.infer(PROMPTS[0], **GREEDY)
            footprint = engine.memory().model_footprint_mb
            assert footprint is not None and footprint > 0

    def test_int8_cast_note_is_not_shown(self, tiny_llama: Path, caplog: pytest.LogCaptureFixture) -> None:
        """bitsandbytes notes, per int8 layer per step, that it casts inputs to fp16: not for the user's eyes."""
        engine = TransformersEngine(str(tiny_llama), quantization="int8")
        with engine, caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.infer(PROMPTS[0], **GREEDY)
            "".join(engine.stream(PROMPTS[0], **GREEDY))
        notes = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
        assert not [n for n in notes if "MatMul8bitLt" in n], notes


CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


QUESTIONS = [
    "What is 2+2?",
    "Name the colour of the sky on a clear summer day.",
    "Write one sentence about the sea, the moon and the long quiet night.",
]


@pytest.mark.slow
class TestSmolLM2:
    def test_dense_cache_written(self, smollm2_engine: TransformersEngine, isolated_env: Path) -> None:
        assert smollm2_engine.source is not None
        assert smollm2_engine.source.kind == "bundled"
        cached = models.dense_cache_dir(models.bundled_gguf())
        assert cached.is_relative_to(isolated_env)
        assert cached.is_dir()
        assert models.is_complete(cached)
        assert (cached / "model.safetensors").is_file()

    def test_chat_knows_paris(self, smollm2_engine: TransformersEngine) -> None:
        answer = smollm2_engine.chat(CAPITAL, do_sample=False, max_new_tokens=20)
        assert "Paris" in answer

    def test_greedy_batch_equals_single_calls(self, smollm2_engine: TransformersEngine) -> None:
        engine = smollm2_engine
        prompts = [engine.render_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
        assert len({engine.count_tokens(p, add_special_tokens=False) for p in prompts}) == 3  # padding happens
        params = engine.params(do_sample=False, max_new_tokens=12)
        batched = engine.generate(prompts, params, add_special_tokens=False)
        single = [engine.generate([p], params, add_special_tokens=False)[0] for p in prompts]
        assert [c.text for c in batched] == [c.text for c in single]
        assert [c.input_tokens for c in batched] == [c.input_tokens for c in single]
        assert [c.output_tokens for c in batched] == [c.output_tokens for c in single]
        assert all(c.text.strip() for c in batched)

    def test_stream_equals_greedy_infer(self, smollm2_engine: TransformersEngine) -> None:
        engine = smollm2_engine
        prompt = engine.render_chat(CAPITAL)
        params = engine.params(do_sample=False, max_new_tokens=12)
        pieces = list(engine.stream_tokens(prompt, params, add_special_tokens=False))
        [expected] = engine.generate([prompt], params, add_special_tokens=False)
        assert len(pieces) > 1
        assert "".join(pieces) == expected.text
        raw = "The capital of France is"
        assert "".join(engine.stream(raw, do_sample=False, max_new_tokens=8)) == engine.infer(
            raw, do_sample=False, max_new_tokens=8
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestGpu:
    def test_bf16_chosen_and_peak_memory_reported(self, tiny_llama: Path) -> None:
        torch.cuda.reset_peak_memory_stats()
        with TransformersEngine(str(tiny_llama)) as engine:
            assert engine.plan is not None and engine.plan.device == "cuda"
            expected = torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
            assert engine.model.dtype == expected
            assert engine.plan.dtype == str(expected).removeprefix("torch.")
            assert engine.model.device.type == "cuda"
            out = engine.infer(PROMPTS, **GREEDY)
            assert len(out) == 3
            assert "".join(engine.stream(PROMPTS[0], **GREEDY)) == engine.infer(PROMPTS[0], **GREEDY)
            report = engine.memory()
            assert report.cuda_allocated_mb is not None and report.cuda_allocated_mb > 0
            assert report.cuda_reserved_mb is not None and report.cuda_reserved_mb >= report.cuda_allocated_mb
            assert torch.cuda.max_memory_allocated() / MB >= report.cuda_allocated_mb > 0
        assert torch.cuda.memory_allocated() / MB < report.cuda_allocated_mb

    def test_fp32_manual_on_cuda(self, tiny_llama: Path) -> None:
        with TransformersEngine(str(tiny_llama), auto_config=False) as engine:
            assert engine.plan is not None and engine.plan.device == "cuda"
            assert engine.model.dtype == torch.float32
