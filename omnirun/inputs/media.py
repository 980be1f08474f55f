"""Images and audio from a record: a file path, an http(s) URL, or a dataset's Image / Audio value. A file
that cannot be read (missing, corrupt, an unsupported codec) raises InputError naming it, which becomes that
record's error row.

Decoding is Transformers' own (`image_utils.load_image`; `audio_utils.load_audio` with soundfile + soxr, as
`librosa.load` does); a dataset's Audio value holding bytes is decoded with soundfile and resampled with soxr.
"""

from __future__ import annotations

import io
from typing import Any

from omnirun.errors import InputError, first_line


def describe(value: Any) -> str:
    """How a media value is named in an error or echoed in outputs.jsonl."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return f"<{type(value).__name__}>"


def load_image(value: Any) -> Any:
    """An RGB PIL image."""
    from PIL import Image

    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes"):
            image = Image.open(io.BytesIO(value["bytes"]))
        else:
            from transformers.image_utils import load_image as hf_load_image

            image = hf_load_image(check_exists(value["path"] if isinstance(value, dict) else value), timeout=30)
        return image.convert("RGB")
    except Exception as exc:
        raise InputError(f"image {describe(value)!r} cannot be read: {first_line(str(exc))[:200]}") from None


def load_audio(value: Any, rate: int) -> Any:
    """Mono float32 samples at `rate` Hz (a numpy array)."""
    import numpy as np

    try:
        if isinstance(value, np.ndarray):
            return value.astype(np.float32)
        if isinstance(value, dict) and value.get("array") is not None:
            samples, source_rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
            return resample(samples, source_rate, rate)
        if isinstance(value, dict) and value.get("bytes"):
            import soundfile

            samples, source_rate = soundfile.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
            return resample(samples.mean(axis=1), source_rate, rate)
        from transformers.audio_utils import load_audio as hf_load_audio

        path = value["path"] if isinstance(value, dict) else value
        samples = hf_load_audio(check_exists(path), sampling_rate=rate, backend="soundfile", timeout=30)
        if samples.size == 0:
            raise ValueError("it holds no samples")
        return samples.astype(np.float32)
    except Exception as exc:
        raise InputError(f"audio {describe(value)!r} cannot be read: {first_line(str(exc))[:200]}") from None


def resample(samples: Any, source_rate: int, rate: int) -> Any:
    if source_rate == rate:
        return samples
    import soxr

    return soxr.resample(samples, source_rate, rate)


def check_exists(path: str) -> str:
    """A local path must exist (Transformers would read any other string as base64 data)."""
    from pathlib import Path

    if not path.startswith(("http://", "https://", "data:")) and not Path(path).expanduser().is_file():
        raise FileNotFoundError("no such file")
    return str(Path(path).expanduser()) if not path.startswith(("http://", "https://", "data:")) else path
