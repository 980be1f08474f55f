"""Text encoders' tasks written here rather than through a pipeline (see `engine.hf.analyze` for why): pooled
embeddings, extractive QA's span search, and reranking by a cross-encoder or by embedding similarity."""

from __future__ import annotations

from typing import Any

from omnirun.config import TaskConfig
from omnirun.engine.base import Answer


def embed(model: Any, tokenizer: Any, texts: list[str], options: TaskConfig, limit: int | None) -> list[Answer]:
    """One vector per text: the last hidden states of a padded batch, pooled over real tokens (`mean`), the
    first token (`cls`) or the last real one (`last`, for decoder LMs), L2-normalized when `task.normalize`.
    Texts longer than the model's context are cut to it (the row says `truncated: true`)."""
    import torch

    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=limit is not None, max_length=limit)
    full = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    enc = enc.to(model.device)
    with torch.inference_mode():
        states = model(**enc).last_hidden_state.float()
    vectors = pool(states, enc["attention_mask"], str(options.pooling))
    if options.normalize:
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


def question_answer(model: Any, tokenizer: Any, items: list[dict[str, Any]], limit: int | None) -> list[Answer]:
    """The best answer span of each context, searched across 128-token-strided windows of long contexts."""
    import torch

    max_len = min(limit or 384, 384)
    enc = tokenizer(
        [i["question"] for i in items],
        [i["context"] for i in items],
        truncation="only_second",
        max_length=max_len,
        stride=min(128, max_len // 4),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=True,
        return_tensors="pt",
    )
    owners = enc.pop("overflow_to_sample_mapping").tolist()
    offsets = enc.pop("offset_mapping").tolist()
    with torch.inference_mode():
        out = model(**{k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")})
    best: dict[int, tuple[float, int, int]] = {}
    for f, owner in enumerate(owners):
        context = [s == 1 for s in enc.sequence_ids(f)]
        span = best_span(out.start_logits[f].float().cpu(), out.end_logits[f].float().cpu(), context)
        if span is not None and (owner not in best or span[0] > best[owner][0]):
            start_char, end_char = offsets[f][span[1]][0], offsets[f][span[2]][1]
            best[owner] = (span[0], start_char, end_char)
    tokens = enc["attention_mask"].sum(dim=1).tolist()
    answers = []
    for i, item in enumerate(items):
        n = sum(int(tokens[f]) for f, owner in enumerate(owners) if owner == i)
        if i not in best:
            answers.append(Answer({"answer": "", "score": 0.0, "start": None, "end": None}, input_tokens=n))
            continue
        score, start, end = best[i]
        fields = {"answer": item["context"][start:end], "score": score, "start": start, "end": end}
        answers.append(Answer(fields, input_tokens=n))
    return answers


def best_span(start_logits: Any, end_logits: Any, context: list[bool], max_answer: int = 30) -> Any:
    """(probability, start token, end token) of the likeliest span inside the context, or None."""
    import torch

    allowed = torch.tensor(context)
    if not allowed.any():
        return None
    start = torch.softmax(start_logits.masked_fill(~allowed, -1e9), dim=-1)
    end = torch.softmax(end_logits.masked_fill(~allowed, -1e9), dim=-1)
    scores = torch.triu(torch.outer(start, end)).tril(max_answer - 1)
    flat = int(scores.argmax())
    s, e = divmod(flat, scores.shape[1])
    return float(scores[s, e]), s, e


def rerank_cross(model: Any, tokenizer: Any, item: dict[str, Any], limit: int | None) -> Answer:
    """Relevance of each document to the query from a cross-encoder: sigmoid of its one logit (or the last
    class's probability for a multi-label head)."""
    import torch

    docs = item["documents"]
    enc = tokenizer([item["query"]] * len(docs), docs, padding=True, truncation=True, max_length=limit)
    enc = enc.convert_to_tensors("pt").to(model.device)
    with torch.inference_mode():
        logits = model(**enc).logits.float()
    scores = logits[:, 0].sigmoid() if logits.shape[1] == 1 else logits.softmax(dim=-1)[:, -1]
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
