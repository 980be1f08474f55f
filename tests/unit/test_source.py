"""Model resolution (short names, hub ids, folders, GGUF), file hashing, and load-failure messages."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from omnirun.engine import source as models
from omnirun.errors import ModelLoadError


def test_bundled_smollm2_resolves_to_its_gguf() -> None:
    source = models.resolve("smollm2")
    assert source.kind == "bundled"
    assert source.name == "smollm2"
    assert source.gguf_file == models.BUNDLED_FILE
    assert source.is_gguf
    assert source.gguf_path == models.bundled_gguf()
    assert source.gguf_path.is_file()
    assert source.gguf_path.stat().st_size > 50 * 1024**2


def test_hub_id_resolves_without_network() -> None:
    source = models.resolve("Qwen/Qwen2.5-0.5B-Instruct")
    assert source.kind == "hub"
    assert source.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert not source.is_gguf
    assert source.gguf_path is None


@pytest.mark.parametrize(("short", "hub_id"), sorted(models.SHORT_NAMES.items()))
def test_short_names_resolve_to_hub_ids(short: str, hub_id: str) -> None:
    source = models.resolve(short)
    assert (source.kind, source.name, source.path) == ("hub", short, hub_id)


def test_qwen_short_name() -> None:
    source = models.resolve("qwen")
    assert (source.kind, source.path) == ("hub", "Qwen/Qwen2.5-0.5B-Instruct")


def test_hub_id_with_gguf_file() -> None:
    source = models.resolve("someone/some-model-GGUF", gguf_file="model.Q4_0.gguf")
    assert (source.kind, source.path, source.gguf_file) == ("hub", "someone/some-model-GGUF", "model.Q4_0.gguf")
    assert source.is_gguf


def test_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    source = models.resolve(str(folder))
    assert (source.kind, source.path, source.gguf_file) == ("local", str(folder.resolve()), None)
    monkeypatch.chdir(tmp_path)
    relative = models.resolve("./my-model")
    assert (relative.kind, relative.name, relative.path) == ("local", "./my-model", str(folder.resolve()))


def test_local_folder_with_gguf_file(tmp_path: Path) -> None:
    source = models.resolve(str(tmp_path), gguf_file="weights.gguf")
    assert source.kind == "local"
    assert source.gguf_path == tmp_path.resolve() / "weights.gguf"


def test_gguf_file_path(tmp_path: Path) -> None:
    gguf = tmp_path / "model.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    source = models.resolve(str(gguf))
    assert (source.kind, source.path, source.gguf_file) == ("gguf", str(tmp_path.resolve()), "model.Q8_0.gguf")
    assert source.gguf_path == gguf.resolve()


@pytest.mark.parametrize("name", ["missing.gguf", "./models/missing.gguf", "/no/such/dir/model.Q4_0.gguf"])
def test_missing_gguf_file(name: str) -> None:
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        models.resolve(name)


@pytest.mark.parametrize("name", ["./nope/model", "/no/such/model", "~/no-such-omnirun-model", "a/b/c"])
def test_missing_folder(name: str) -> None:
    with pytest.raises(ModelLoadError, match="no such model folder") as info:
        models.resolve(name)
    assert name in str(info.value)


def test_cache_root_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    assert models.cache_root() == isolated_env  # conftest keeps tests out of the user's cache
    monkeypatch.delenv("OMNIRUN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.cache_root() == tmp_path / "omnirun"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.cache_root() == Path.home() / ".cache" / "omnirun"


def test_file_sha256_matches_hashlib_and_is_memoised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIRUN_CACHE", str(tmp_path / "cache"))
    data = os.urandom(3 * 1024**2 + 17)  # more than one 1 MB read chunk
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert models.file_sha256(path) == expected
    memos = list((tmp_path / "cache" / "hashes").iterdir())
    assert len(memos) == 1
    assert memos[0].read_text().strip() == expected

    # Same path, size and mtime: the memo answers without reading the file again.
    stat = path.stat()
    changed = bytes([data[0] ^ 0xFF]) + data[1:]
    path.write_bytes(changed)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert models.file_sha256(path) == expected

    # A new mtime is a new key: the file is hashed again.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert models.file_sha256(path) == hashlib.sha256(changed).hexdigest()
    assert len(list((tmp_path / "cache" / "hashes").iterdir())) == 2


def test_dense_cache_dir_is_keyed_by_hash_and_transformers_version(tmp_path: Path) -> None:
    import transformers

    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"not really gguf")
    folder = models.dense_cache_dir(gguf)
    assert folder.parent == models.cache_root() / "gguf"
    assert folder.name.startswith(hashlib.sha256(b"not really gguf").hexdigest()[:20])
    assert folder.name.endswith(f"transformers{transformers.__version__}")
    assert not models.is_complete(folder)


def test_dense_cache_key_names_its_format(tmp_path: Path) -> None:
    """Format 2 dropped the GGUF quantization_config; copies of format 1 are not reused but rebuilt."""
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"gguf")
    assert models.DENSE_FORMAT >= 2
    assert f"-dense{models.DENSE_FORMAT}-" in models.dense_cache_dir(gguf).name


class GgufLoaded:
    """What `save_pretrained` of a GGUF-loaded Transformers model writes: dense weights, and a config.json that
    still says `quantization_config: {quant_method: gguf}`."""

    hf_quantizer = object()

    def save_pretrained(self, folder: Path) -> None:
        assert self.hf_quantizer is None  # the GGUF quantizer refuses to save; the cache writer lifts it
        config = {"model_type": "llama", "quantization_config": {"quant_method": "gguf", "dequantize": False}}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "model.safetensors").write_bytes(b"weights")


class Tokenizer:
    def save_pretrained(self, folder: Path) -> None:
        (folder / "tokenizer.json").write_text("{}")


def test_dense_cache_is_a_plain_checkpoint(tmp_path: Path) -> None:
    """The copy's config.json had kept the GGUF quantization_config: every later load became a GGUF load, so
    bitsandbytes refused it ("quantized with GgufConfig"), fp16 warned, and save_pretrained failed."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"gguf bytes")
    model = GgufLoaded()
    folder = models.write_dense_cache(model, Tokenizer(), gguf)
    assert models.is_complete(folder)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert json.loads((folder / "omnirun-cache.json").read_text())["format"] == models.DENSE_FORMAT
    assert model.hf_quantizer is GgufLoaded.hf_quantizer  # restored


def test_config_json_file_resolves_for_random_init(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    source = models.resolve(str(tmp_path / "config.json"))
    assert (source.kind, source.path, source.is_gguf) == ("config", str((tmp_path / "config.json").resolve()), False)
    with pytest.raises(ModelLoadError, match="no such config file"):
        models.resolve(str(tmp_path / "missing.json"))


HUB_ERROR = OSError(
    "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached "
    "files.\nCheck your internet connection or see how to run the library in offline mode at "
    "'https://huggingface.co/docs/transformers/installation#offline-mode'."
)


def test_describe_hub_failure() -> None:
    err = models.describe_load_failure(models.resolve("qwen"), HUB_ERROR)
    assert isinstance(err, ModelLoadError)
    message = str(err)
    assert "\n" not in message
    assert "'qwen'" in message
    assert "Qwen/Qwen2.5-0.5B-Instruct" in message
    assert "smollm2" in message
    assert "couldn't connect" in message
    assert "Check your internet" not in message  # only the first line of the cause


def test_describe_local_failure(tmp_path: Path) -> None:
    source = models.resolve(str(tmp_path))
    err = models.describe_load_failure(source, ValueError("Unrecognized model in folder.\nShould have a model_type"))
    message = str(err)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert "Unrecognized model in folder." in message
    assert "Hugging Face Hub" not in message


def test_describe_failure_without_message() -> None:
    err = models.describe_load_failure(models.resolve("qwen"), KeyError())
    assert "\n" not in str(err)
    assert "'qwen'" in str(err)
