"""Long texts are never tokenized whole where only their start matters (`engine.hf.bounds`): the prefix a
truncating task tokenizes gives exactly the whole text's tokens, and a text over a model's context is refused
from a prefix. A spy on the tokenizer proves the whole text never reaches it."""

from __future__ import annotations

from typing import Any

import pytest
from tiny_heads import text_tokenizer

from omnirun.engine.hf import bounds
from omnirun.engine.hf.bounds import text_tokens
from omnirun.errors import InputError

LIMIT = 64


class Spy:
    """A tokenizer that records the longest text it was given."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.longest = tokenizer, 0

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        for t in (text, *args[:1], kwargs.get("text_pair")):
            for one in t if isinstance(t, list) else [t]:
                self.longest = max(self.longest, len(one) if isinstance(one, str) else 0)
        return self.tokenizer(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def wordpiece() -> Any:
    """A BERT-style tokenizer: lower-cased, accents and runs of spaces dropped by its normalizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "##s", "##ing", "##ed"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words, *letters, *(f"##{c}" for c in letters)]
    vocab = {t: i for i, t in enumerate(pieces)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))  # a word over 100 characters is one [UNK]
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    return text_tokenizer() if request.param == "bpe" else wordpiece()


TEXTS = {  # small enough to tokenize whole here, long enough to be cut (the first prefix is 4,096 characters)
    "prose": "The quick brown fox jumps over the lazy dog. " * 1_000,
    "spaces first": " " * 10_000 + "the quick brown fox " * 2_000,
    "one long word": "abcdefghij" * 1_000,
    "accents": "Déjà vu, café! " * 2_000,
    "mixed": ("x" * 90 + " ") * 400,
}


@pytest.mark.parametrize("name", TEXTS)
def test_a_prefix_truncates_to_the_same_tokens_as_the_whole_text(tokenizer: Any, name: str) -> None:
    text = TEXTS[name]
    cut = bounds.head(tokenizer, text, LIMIT)
    one_unk = name == "one long word" and tokenizer.unk_token == "[UNK]"  # WordPiece: the whole word is 1 token
    assert cut.cut != one_unk and (len(cut.text) < len(text)) != one_unk
    whole = tokenizer(text, truncation=True, max_length=LIMIT)["input_ids"]
    assert tokenizer(cut.text, truncation=True, max_length=LIMIT)["input_ids"] == whole
    assert bounds.bounded(tokenizer, [text, "short"], LIMIT) == [cut.text, "short"]


def test_a_short_text_is_kept_whole_and_not_tokenized(tokenizer: Any) -> None:
    spy = Spy(tokenizer)
    assert bounds.head(spy, "a short text", LIMIT) == bounds.Head("a short text")
    assert spy.longest == 0


PROSE = "The quick brown fox jumps over the lazy dog. "


@pytest.mark.parametrize("query", ["which fox", PROSE * 110])
@pytest.mark.parametrize("doc", ["a dog", PROSE * 100, " " * 4_000 + "the quick brown fox " * 60, "fox " * 150])
@pytest.mark.parametrize("limit", [LIMIT, LIMIT + 1])
def test_a_pair_truncates_to_the_same_tokens(tokenizer: Any, query: str, doc: str, limit: int) -> None:
    """`longest_first` truncation of a (query, document) pair: the same tokens from the cut pair, whichever is
    longer and whatever the parity of the budget (texts of a few thousand characters: whole-text pair truncation
    is quadratic in them)."""
    first, second = bounds.bounded_pair(tokenizer, query, doc, limit)
    want = tokenizer(query, doc, truncation=True, max_length=limit)["input_ids"]
    assert tokenizer(first, second, truncation=True, max_length=limit)["input_ids"] == want


def test_a_text_over_the_context_is_refused_from_a_prefix(tokenizer: Any) -> None:
    spy = Spy(tokenizer)
    text = TEXTS["prose"] * 100  # 4.5 MB
    with pytest.raises(InputError, match=r"the text is longer than the model's context of 64 tokens: its first "):
        text_tokens(spy, [{"prompt": text}], LIMIT)
    assert spy.longest < 20_000  # the prefix, never the 4.5 MB
    with pytest.raises(InputError, match=r"text_pair is longer than the model's context"):
        text_tokens(spy, [{"prompt": "a dog", "text_pair": text}], LIMIT)


def test_a_text_just_over_the_context_is_refused_with_its_count(tokenizer: Any) -> None:
    with pytest.raises(InputError, match=r"the text has \d+ tokens, more than the model's context of 64; shorten it"):
        text_tokens(tokenizer, [{"prompt": "the dog " * 40}], LIMIT)
    n = len(tokenizer("the dog", "a fox")["input_ids"])
    assert text_tokens(tokenizer, [{"prompt": "the dog", "text_pair": "a fox"}], LIMIT) == [n]


def test_a_qa_context_over_its_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match=r"context is 101 characters, over the limit of 100 .*task.max_context_chars"):
        bounds.check_qa_context("x" * 101, 100)
    bounds.check_qa_context("x" * 100, 100)


def test_the_feature_encoder_estimate() -> None:
    from types import SimpleNamespace

    config = SimpleNamespace(conv_dim=[512, 512], conv_stride=[5, 2])
    hours3 = 3 * 3600 * 16000
    assert bounds.forward_mb(config, hours3) == pytest.approx(512 * hours3 / 5 * 4 * 3 / 2**20)
    assert bounds.forward_mb(SimpleNamespace(), hours3) is None


def test_a_clip_too_long_for_one_forward_pass_is_refused_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """audio_classify on a wav2vec2-style model: the first convolution over the whole clip is checked against
    the free memory; transcribe with `task.chunk_length_s` is checked per chunk."""
    from types import SimpleNamespace

    from omnirun.config import TaskName
    from omnirun.task_config import TopKConfig, TranscribeConfig

    model = SimpleNamespace(config=SimpleNamespace(conv_dim=[512], conv_stride=[5]), device=None)
    monkeypatch.setattr(bounds, "free_mb", lambda model: 300.0)
    clip = {"audio": [0.0] * 16000 * 60, "sampling_rate": 16000, "audio_s": 60.0, "audio_path": "long.wav"}
    with pytest.raises(InputError, match=r"'long.wav': one forward pass over 60 s needs ~1,125 MB .* 270 MB free"):
        bounds.check_audio_forward(model, TaskName.audio_classify, [clip], TopKConfig())
    one_s = {**clip, "audio": [0.0] * 16000, "audio_s": 1.0}
    bounds.check_audio_forward(model, TaskName.audio_classify, [one_s], TopKConfig())
    chunked = TranscribeConfig(chunk_length_s=10)
    bounds.check_audio_forward(model, TaskName.transcribe, [clip], chunked)
