"""Text encoders' tasks written here rather than through a pipeline (see `engine.hf.analyze` for why): pooled
embeddings, extractive QA's span search, and reranking by a cross-encoder or by embedding similarity."""

from __future__ import annotations

from typing import Any

from omnirun.config import TaskConfig
from omnirun.engine.base import Answer
from omnirun.engine.hf.bounds import (
    MAX_QA_CONTEXT_CHARS,
    QA_WINDOWS_PER_PASS,
    bounded,
    bounded_pair,
    check_fits,
    check_qa_context,
)
from omnirun.task_config import EmbedConfig, options_as


def embed(model: Any, tokenizer: Any, texts: list[str], options: TaskConfig, limit: int | None) -> list[Answer]:
    """One vector per text: the last hidden states of a padded batch, pooled over real tokens (`mean`), the
    first token (`cls`) or the last real one (`last`, for decoder LMs), L2-normalized when `task.normalize`.
    Texts longer than the model's context are cut to it (the row says `truncated: true`); a long text is
    tokenized from a prefix that holds the same first tokens (`bounds.bounded`), never whole."""
    import torch

    texts = bounded(tokenizer, texts, limit)
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=limit is not None, max_length=limit)
    full = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    with torch.inference_mode():
        states = model(**model_inputs(model, tokenizer, enc)).last_hidden_state.float()
    embedding = options_as(options, EmbedConfig)
    vectors = pool(states, enc["attention_mask"].to(states.device), str(embedding.pooling))
    if embedding.normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
    counts = enc["attention_mask"].sum(dim=1).tolist()
    answers = []
    for vec, n, total in zip(vectors.cpu().tolist(), counts, full, strict=True):
        result: dict[str, Any] = {"embedding": vec, "dim": len(vec)}
        if total > n:
            result["truncated"] = True
        answers.append(Answer(result, input_tokens=int(n)))
    return answers


def embed_items(
    model: Any, tokenizer: Any, items: list[dict[str, Any]], options: TaskConfig, limit: int | None
) -> list[Answer]:
    """`embed` over items of one text (`prompt`) or several (`texts`, an OpenAI embeddings request's list)."""
    groups = [i["texts"] if "texts" in i else [i["prompt"]] for i in items]
    flat = embed(model, tokenizer, [t for g in groups for t in g], options, limit)
    answers, at = [], 0
    for item, group in zip(items, groups, strict=True):
        part, at = flat[at : at + len(group)], at + len(group)
        if "texts" not in item:
            answers.append(part[0])
            continue
        vectors = [a.result["embedding"] for a in part]
        tokens = sum(a.input_tokens or 0 for a in part)
        answers.append(Answer({"embeddings": vectors, "dim": len(vectors[0])}, input_tokens=tokens))
    return answers


def pool(states: Any, mask: Any, pooling: str) -> Any:
    """(batch, tokens, hidden) states to (batch, hidden), whichever side the padding is on."""
    import torch

    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    real = positions.masked_fill(mask == 0, -1 if pooling == "last" else mask.shape[1])
    index = real.max(dim=1).values if pooling == "last" else real.min(dim=1).values
    return states[torch.arange(states.shape[0], device=states.device), index]


QA_MAX_SEQ = 384
"""Transformers' question-answering pipeline's longest window (question + context), in tokens."""
QA_STRIDE = 128
"""Its overlap between the windows of a long context, in tokens."""
QA_MAX_ANSWER = 15
"""Its longest answer, in tokens."""


def model_inputs(model: Any, tokenizer: Any, enc: Any) -> dict[str, Any]:
    """The encoded tensors the model takes: the tokenizer's `model_input_names` that `forward` accepts (BERT's
    and DeBERTa-v2's `token_type_ids` included; DistilBERT, which has none, gets none)."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = {"input_ids", "attention_mask", *getattr(tokenizer, "model_input_names", ())} & accepted
    return {k: v.to(model.device) for k, v in enc.items() if k in names}


def question_answer(
    model: Any,
    tokenizer: Any,
    items: list[dict[str, Any]],
    limit: int | None,
    *,
    max_answer_len: int = QA_MAX_ANSWER,
    handle_impossible: bool = False,
    max_context_chars: int = MAX_QA_CONTEXT_CHARS,
) -> list[Answer]:
    """The best answer span of each context, as Transformers 4's `QuestionAnsweringPipeline` found it: windows
    of at most 384 tokens (the model's limit when smaller) overlapping by 128 (half a window when smaller),
    start and end probabilities over the context tokens and [CLS] (its null score), spans of at most
    `max_answer_len` tokens widened to whole words. `handle_impossible` answers "" when [CLS] beats every span."""
    import torch

    max_len = min(limit or QA_MAX_SEQ, QA_MAX_SEQ)
    question_first = tokenizer.padding_side == "right"
    questions, contexts = [i["question"] for i in items], [i["context"] for i in items]
    for question, context in zip(questions, contexts, strict=True):
        check_fits(tokenizer, "the question", question, max_len)
        check_qa_context(context, max_context_chars)
    enc = tokenizer(
        questions if question_first else contexts,
        contexts if question_first else questions,
        truncation="only_second" if question_first else "only_first",
        max_length=max_len,
        stride=min(max_len // 2, QA_STRIDE),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        padding=True,
        return_tensors="pt",
    )
    owners = enc["overflow_to_sample_mapping"].tolist()
    inputs, step = model_inputs(model, tokenizer, enc), QA_WINDOWS_PER_PASS
    with torch.inference_mode():  # a long context's windows in passes of QA_WINDOWS_PER_PASS
        outs = [model(**{k: v[i : i + step] for k, v in inputs.items()}) for i in range(0, len(owners), step)]
    starts = torch.cat([o.start_logits for o in outs]).float().cpu()
    ends = torch.cat([o.end_logits for o in outs]).float().cpu()
    context_id = 1 if question_first else 0
    best: dict[int, tuple[float, int, int]] = {}
    null: dict[int, float] = {}
    for f, owner in enumerate(owners):
        keep = torch.tensor([s == context_id for s in enc.sequence_ids(f)])
        if tokenizer.cls_token_id is not None:  # [CLS] stays in the softmax: its probability is the null answer's
            keep |= enc["input_ids"][f] == tokenizer.cls_token_id
        keep &= enc["attention_mask"][f].bool()
        span, null_score = best_span(starts[f], ends[f], keep, max_answer_len)
        null[owner] = min(null.get(owner, null_score), null_score)
        if span is not None and (owner not in best or span[0] > best[owner][0]):
            best[owner] = (span[0], *word_chars(enc[f], span[1], span[2], 1 if question_first else 0))
    tokens = enc["attention_mask"].sum(dim=1).tolist()
    answers = []
    for i, item in enumerate(items):
        n = sum(int(tokens[f]) for f, owner in enumerate(owners) if owner == i)
        if handle_impossible and (i not in best or null[i] > best[i][0]):
            answers.append(Answer({"answer": "", "score": null[i], "start": 0, "end": 0}, input_tokens=n))
        elif i not in best:
            answers.append(Answer({"answer": "", "score": 0.0, "start": None, "end": None}, input_tokens=n))
        else:
            score, start, end = best[i]
            fields = {"answer": item["context"][start:end], "score": score, "start": start, "end": end}
            answers.append(Answer(fields, input_tokens=n))
    return answers


def best_span(start_logits: Any, end_logits: Any, keep: Any, max_answer: int) -> tuple[Any, float]:
    """((probability, start token, end token) of the likeliest span, or None; the null score: P(start = end =
    first token)). Positions outside `keep` get a -10000 logit; the first token ([CLS]) takes part in the
    softmax but cannot be a span."""
    import torch

    start = torch.softmax(start_logits.masked_fill(~keep, -10000.0), dim=-1)
    end = torch.softmax(end_logits.masked_fill(~keep, -10000.0), dim=-1)
    null = float(start[0] * end[0])
    start[0] = end[0] = 0.0
    allowed = keep.clone()
    allowed[0] = False
    if not allowed.any():
        return None, null
    scores = torch.triu(torch.outer(start, end)).tril(max_answer - 1)
    s, e = divmod(int(scores.argmax()), scores.shape[1])
    if not (allowed[s] and allowed[e]):
        return None, null
    return (float(scores[s, e]), s, e), null


def word_chars(encoding: Any, start: int, end: int, sequence: int) -> tuple[int, int]:
    """The characters of the context from the word holding token `start` to the word holding token `end` (the
    tokens' own offsets when the tokenizer has no words)."""
    try:
        first, last = encoding.token_to_word(start), encoding.token_to_word(end)
        return int(encoding.word_to_chars(first, sequence)[0]), int(encoding.word_to_chars(last, sequence)[1])
    except Exception:  # a token outside any word
        return int(encoding.offsets[start][0]), int(encoding.offsets[end][1])


def rerank_cross(model: Any, tokenizer: Any, item: dict[str, Any], limit: int | None) -> Answer:
    """Relevance of each document to the query from a cross-encoder: sigmoid of its one logit, or P(label 1) of a
    two-label head. A head of more labels is not a relevance score (`capabilities` refuses it before loading)."""
    import torch

    labels = int(model.config.num_labels)
    if labels > 2:
        raise ValueError(
            f"task=rerank needs a cross-encoder (1 relevance logit, or 2 labels), but model has {labels} labels"
        )
    pairs = [bounded_pair(tokenizer, item["query"], doc, limit) for doc in item["documents"]]
    firsts, seconds = [p[0] for p in pairs], [p[1] for p in pairs]
    enc = tokenizer(firsts, seconds, padding=True, truncation=True, max_length=limit)
    enc = enc.convert_to_tensors("pt")
    with torch.inference_mode():
        logits = model(**model_inputs(model, tokenizer, enc)).logits.float()
    scores = logits[:, 0].sigmoid() if labels == 1 else logits.softmax(dim=-1)[:, 1]
    return ranked(scores.cpu().tolist(), item, int(enc["attention_mask"].sum()))


def rerank_embed(model: Any, tokenizer: Any, item: dict[str, Any], options: TaskConfig, limit: int | None) -> Answer:
    """Relevance as the cosine similarity of the query's and each document's embedding."""
    vectors = embed(model, tokenizer, [item["query"], *item["documents"]], options, limit)
    query = vectors[0].result["embedding"]
    scores = [cosine(query, v.result["embedding"]) for v in vectors[1:]]
    return ranked(scores, item, sum(v.input_tokens or 0 for v in vectors))


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = (sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5)
    return dot / norm if norm else 0.0


def ranked(scores: list[float], item: dict[str, Any], tokens: int) -> Answer:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    top_n = item.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        order = order[:top_n]
    return Answer({"scores": [float(s) for s in scores], "ranking": order}, input_tokens=tokens)
