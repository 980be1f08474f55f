"""task=export export.format=onnx gives a graph whose answers equal `model(**inputs)`: every input the model reads
(token type ids for BERT and DeBERTa-v2, so a text pair keeps its two segments) and every output of its head
(question answering's start and end logits), checked with onnxruntime on inputs the export never saw."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from differential.conftest import Zoo, note, words

from clirun import omnirun

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="the onnx extra is absent")

HEADS = {
    "bert-qa": ("AutoModelForQuestionAnswering", ["start_logits", "end_logits"]),
    "deberta-qa": ("AutoModelForQuestionAnswering", ["start_logits", "end_logits"]),
    "bert-classifier": ("AutoModelForSequenceClassification", ["logits"]),
    "distilbert-classifier": ("AutoModelForSequenceClassification", ["logits"]),
    "roberta-ner": ("AutoModelForTokenClassification", ["logits"]),
}


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_the_onnx_graph_answers_as_the_model_does(kind: str, zoo: Zoo, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime
    import torch
    import transformers

    folder = zoo[kind]
    target = tmp_path / "onnx"
    export = ["task=export", "export.format=onnx", f"export.path={target}"]
    assert omnirun(tmp_path / "o", f"model.name={folder}", *export) == 0
    auto, outputs = HEADS[kind]
    model = getattr(transformers, auto).from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    session = onnxruntime.InferenceSession(str(target / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == outputs
    names = [i.name for i in session.get_inputs()]
    assert ("token_type_ids" in names) == ("token_type_ids" in tokenizer.model_input_names)
    enc = tokenizer([words(5), words(30, 3)], [words(9, 1), words(4, 2)], padding=True, return_tensors="np")
    got = session.run(None, {n: enc[n].astype(np.int64) for n in names})
    with torch.no_grad():
        want = model(**{k: torch.tensor(v) for k, v in enc.items()})
    mask = enc["attention_mask"].astype(bool)
    for name, value in zip(outputs, got, strict=True):
        diff = np.abs(value - want[name].numpy())
        diff = diff[mask] if diff.shape[:2] == mask.shape else diff
        assert note("export_onnx", kind, float(diff.max())) < 1e-4, name
