"""Reference answers computed directly with Transformers, one input at a time, independently of omnirun's code:
the pipeline where Transformers 5 has one, else `model(**inputs)` / `model.generate` as its documentation
shows. `qa` is Transformers 4's `QuestionAnsweringPipeline` (fast-tokenizer path) rewritten in numpy: Transformers
5 removed that pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def qa(
    model: Any,
    tokenizer: Any,
    question: str,
    context: str,
    *,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
    max_seq_len: int | None = None,
) -> dict[str, Any] | None:
    """Transformers 4.4x `QuestionAnsweringPipeline(question=..., context=...)` with its defaults: windows of
    min(model_max_length, 384) tokens overlapping by min(window // 2, 128), p_mask = not context (with [CLS]
    kept), -10000 logits outside, softmax, null score = P(start=0) P(end=0), [CLS] zeroed, the best span of
    at most `max_answer_len` tokens, widened to words. None where the pipeline returns no answer."""
    import torch

    max_seq_len = max_seq_len or min(tokenizer.model_max_length, 384)
    enc = tokenizer(
        text=question,
        text_pair=context,
        truncation="only_second",
        max_length=max_seq_len,
        stride=min(max_seq_len // 2, 128),
        return_token_type_ids=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    names = [n for n in tokenizer.model_input_names if n in enc]
    answers = []
    min_null_score = 1000000.0
    for span in range(len(enc["input_ids"])):
        ids = np.array(enc["input_ids"][span])
        p_mask = np.array([tok != 1 for tok in enc.sequence_ids(span)]).astype(int)
        if tokenizer.cls_token_id is not None:
            p_mask[ids == tokenizer.cls_token_id] = 0
        inputs = {n: torch.tensor([enc[n][span]]) for n in names}
        with torch.inference_mode():
            out = model(**inputs)
        start, end = out.start_logits.numpy(), out.end_logits.numpy()
        undesired = np.abs(p_mask - 1) & np.array([enc["attention_mask"][span]])
        mask = undesired == 0.0
        start = np.where(mask, -10000.0, start)
        end = np.where(mask, -10000.0, end)
        start = np.exp(start - start.max(axis=-1, keepdims=True))
        start = start / start.sum()
        end = np.exp(end - end.max(axis=-1, keepdims=True))
        end = end / end.sum()
        if handle_impossible_answer:
            min_null_score = min(min_null_score, float(start[0, 0] * end[0, 0]))
        start[0, 0] = end[0, 0] = 0.0
        outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
        candidates = np.tril(np.triu(outer), max_answer_len - 1)
        flat = int(np.argmax(candidates.flatten()))
        _, s, e = np.unravel_index(flat, candidates.shape)
        if not (undesired[0, s] and undesired[0, e]) or s == 0:
            continue
        encoding = enc[span]
        try:
            first, last = encoding.token_to_word(s), encoding.token_to_word(e)
            start_char = encoding.word_to_chars(first, sequence_index=1)[0]
            end_char = encoding.word_to_chars(last, sequence_index=1)[1]
        except Exception:
            start_char, end_char = encoding.offsets[s][0], encoding.offsets[e][1]
        score = float(candidates[0, s, e])
        answers.append({"score": score, "start": start_char, "end": end_char, "answer": context[start_char:end_char]})
    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    answers.sort(key=lambda a: a["score"], reverse=True)
    return answers[0] if answers else None


def embed(model: Any, tokenizer: Any, text: str, max_length: int) -> list[float]:
    """Mean of the last hidden states over the text's tokens (truncated to `max_length`), unit length."""
    import torch

    enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
    with torch.inference_mode():
        states = model(**enc).last_hidden_state[0]
    vector = states.mean(dim=0)
    return list((vector / vector.norm()).tolist())


def cross_score(model: Any, tokenizer: Any, query: str, document: str) -> float:
    """A cross-encoder's relevance: sigmoid of its one logit, or P(label 1) of a two-label head."""
    import torch

    enc = tokenizer(query, document, return_tensors="pt", truncation=True)
    with torch.inference_mode():
        logits = model(**enc).logits[0]
    return float(logits[0].sigmoid() if logits.shape[0] == 1 else logits.softmax(-1)[1])


def caption(model: Any, processor: Any, image: Any, prompt: str | None) -> list[int]:
    """The new token ids of a caption decoded with the model's own generation config, as the pipelines do
    (after the prompt, BLIP's [DEC] start token or an encoder-decoder's decoder start token)."""
    import torch

    if prompt:
        inputs = processor(images=image, text=prompt, return_tensors="pt")
    else:
        inputs = processor(images=image, return_tensors="pt")
    gen = model.generation_config
    unset = gen.max_length is None and gen.max_new_tokens is None  # omnirun: 100 new tokens, not 20 in all
    with torch.inference_mode():
        out = model.generate(**inputs, **({"max_new_tokens": 100} if unset else {}))[0].tolist()
    if model.config.is_encoder_decoder:
        return list(out[1:])
    given = inputs["input_ids"].shape[1] if prompt else 2  # BLIP: [DEC] + the prompt, its [SEP] dropped
    return list(out[given - 1 :])
