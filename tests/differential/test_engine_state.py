"""The head a task gets equals the head the weights hold: a checkpoint whose config.json lists no
`architectures` is judged by its weights (an MLM checkpoint gets no random classification head), a random-init
config without them lets the task decide the head; and the Python API switches heads between tasks (`tag()` per
call, generation after `embed()` on a causal LM)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from differential.conftest import Zoo, api, cli_rows, jsonl, words

from clirun import omnirun


def without_architectures(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    del config["architectures"]
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_mlm_checkpoint_without_architectures_is_refused_for_classify(tmp_path: Path, zoo: Zoo) -> None:
    from omnirun.engine import TransformersEngine
    from omnirun.errors import ConfigError

    folder = without_architectures(zoo["bert-mlm"], tmp_path / "mlm")
    engine = TransformersEngine(str(folder))
    with pytest.raises(ConfigError, match=r"task=classify needs a classify model.*weights hold no such head"):
        engine.classify(["paris is the capital of france"])
    code = omnirun(tmp_path / "out", "task=classify", f"model.name={folder}",
                   f"input.path={jsonl(tmp_path / 'r.jsonl', [{'prompt': 'paris'}])}")  # fmt: skip
    assert code == 2
    mask = "[MASK]"
    assert engine.fill_mask([f"paris is the {mask} of france"])[0]  # the head its weights hold still serves
    assert len(engine.embed(["paris"])[0]) == 32


def test_classifier_checkpoint_without_architectures_still_classifies(tmp_path: Path, zoo: Zoo) -> None:
    from omnirun.engine import TransformersEngine

    folder = without_architectures(zoo["bert-classifier"], tmp_path / "clf")
    want = TransformersEngine(str(zoo["bert-classifier"])).classify(["paris is the capital of france"])
    assert TransformersEngine(str(folder)).classify(["paris is the capital of france"]) == want


@pytest.mark.parametrize(
    ("task", "field"), [("classify", "label"), ("fill_mask", "predictions"), ("embed", "dim"), ("generate", "output")]
)
def test_random_init_from_a_config_without_architectures(tmp_path: Path, zoo: Zoo, task: str, field: str) -> None:
    """`AutoConfig.save_pretrained` writes no `architectures`: with model.init=random the task picks the head."""
    import transformers

    folder = tmp_path / "cfg"
    shutil.copytree(zoo["bert-mlm"], folder, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    transformers.AutoConfig.from_pretrained(zoo["bert-mlm"]).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("architectures", None)
    (folder / "config.json").write_text(json.dumps(config))
    prompt = "paris is the [MASK] of france"
    rows = cli_rows(tmp_path, folder, task, [{"prompt": prompt}], "model.init=random", "generation.max_new_tokens=3")
    assert rows[0]["error"] is None and rows[0][field]


def test_tag_takes_each_calls_strategy(zoo: Zoo) -> None:

    text = words(25)
    with api(zoo["bert-ner"]) as engine:
        simple = engine.tag([text])[0]
        none = engine.tag([text], aggregation="none")[0]
        assert any(e["entity"].startswith(("B-", "I-")) for e in none)  # `none` keeps the BIO tags
        assert not any(e["entity"].startswith(("B-", "I-")) for e in simple)
        assert engine.tag([text], aggregation="simple")[0] == simple


def test_generation_after_embed_on_a_causal_lm(tiny_llama: Path) -> None:
    from omnirun.engine import TransformersEngine

    with TransformersEngine(str(tiny_llama)) as engine:
        greedy = engine.infer("hello world", max_new_tokens=5, do_sample=False)
        vectors = engine.embed(["hello world"], pooling="last")
        assert len(vectors[0]) == 64
        assert engine.infer("hello world", max_new_tokens=5, do_sample=False) == greedy
        engine.embed(["hello"])
        engine.unload_model()
        engine.load_model()
        assert engine.infer("hello world", max_new_tokens=5, do_sample=False) == greedy
        assert "".join(engine.stream("hello world", max_new_tokens=5, do_sample=False)) == greedy
