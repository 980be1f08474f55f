"""Images and audio from a record: a file path, an http(s) URL, a `data:` URI, or a dataset's Image / Audio
value. A file that cannot be read (missing, corrupt, an unsupported codec) raises InputError naming it, which
becomes that record's error row.

Nothing is decoded before its size is checked (each limit below is a budget per record; a record over one is
its own error row, naming the limit, the value and the way out, and the run goes on):
- a URL is read with a total deadline and a byte cap (`fetch`): a server that sends a byte every few seconds,
  or a body without end, stops at the limit instead of hanging the run or filling the memory;
- an image's width and height come from its header (`PIL.Image.open` reads no pixels) and are checked against
  `input.max_image_pixels` (PIL's decompression-bomb limit) and the free memory before any pixel is decoded;
- an audio file's frames, rate and channels come from its header (`soundfile.SoundFile`) and are checked
  against `input.max_audio_s` and the free memory (the decoded samples plus the resampled copy) before decoding.

Decoding is Transformers' own steps (`image_utils.load_image`: EXIF orientation, then RGB;
`audio_utils.load_audio` with soundfile + soxr, as `librosa.load` does), on bytes fetched here; a dataset's
Audio value holding bytes is decoded with soundfile and resampled with soxr.
"""

from __future__ import annotations

import base64
import http.client
import io
import math
import socket
import threading
import urllib.request
import warnings
from contextlib import suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omnirun.errors import InputError, first_line
from omnirun.hardware import MB, ram_free_mb


@dataclass
class Budgets:
    """What one image or audio record may take, checked before anything is decoded or downloaded; the run's
    `input.*` options (`set_budgets`), the defaults here otherwise."""

    max_image_pixels: int = 89_478_485
    """`input.max_image_pixels`: width x height from the header; PIL's decompression-bomb limit."""
    max_audio_s: float = 3600.0
    """`input.max_audio_s`: frames / sample rate from the header (a header that says 1 Hz makes a short file
    hours long: refused here before the resampler allocates them)."""
    fetch_timeout_s: float = 60.0
    """`input.fetch_timeout_s`: a URL's whole read (a timeout per read never fires on a byte every few seconds)."""
    max_fetch_mb: float = 256.0
    """`input.max_fetch_mb`: a URL's bytes (Content-Length first, then the bytes as they arrive)."""


BUDGETS = Budgets()
"""This process's budgets (one run per process: the runner, or a cluster worker, sets them from the config)."""


def set_budgets(config: Any) -> None:
    """Take the budgets from a run's `input` config (any object with the `Budgets` field names)."""
    global BUDGETS
    BUDGETS = Budgets(**{f.name: getattr(config, f.name) for f in fields(Budgets)})


MEMORY_HEADROOM = 0.9
"""Plan to fill at most this share of the memory that is free when a record is checked."""

IMAGE_BYTES_PER_PIXEL = 8
"""Memory an image takes per pixel while it is decoded and converted (PIL stores RGB in 4 bytes a pixel, and
the decoded original takes up to 4 more)."""

CHUNK = 1 << 16


def describe(value: Any) -> str:
    """How a media value is named in an error or echoed in outputs.jsonl."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return f"<{type(value).__name__}>"


def load_image(value: Any) -> Any:
    """An RGB PIL image (its size checked from the header before any pixel is decoded)."""
    from PIL import Image, ImageOps

    name = describe(value)
    try:
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict) and value.get("bytes"):
            source: str | bytes = value["bytes"]
        else:
            source = media_source(value["path"] if isinstance(value, dict) else value)
        image = open_image(source, name)
        return ImageOps.exif_transpose(image).convert("RGB")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"image {name!r} cannot be read: {first_line(str(exc))[:200]}") from None


def open_image(source: str | bytes, name: str) -> Any:
    """The image's header read (no pixels decoded), its size checked against `input.max_image_pixels` and the free
    memory."""
    from PIL import Image

    fix = "shrink it first, or leave it out"
    with warnings.catch_warnings():  # PIL's own bomb check, as the record's error (not a warning, not a crash)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise InputError(f"image {name!r} is refused before decoding: {first_line(str(exc))}; {fix}") from None
    width, height = image.size
    pixels = width * height
    if pixels > BUDGETS.max_image_pixels:
        raise InputError(
            f"image {name!r} is {width}x{height} = {pixels:,} pixels, over the limit of {BUDGETS.max_image_pixels:,} "
            f"pixels per image (input.max_image_pixels, PIL's decompression-bomb limit); {fix}"
        )
    check_memory(f"image {name!r} ({width}x{height})", pixels * IMAGE_BYTES_PER_PIXEL, fix)
    return image


def load_audio(value: Any, rate: int) -> Any:
    """Mono float32 samples at `rate` Hz (a numpy array); the length is checked from the header first."""
    import numpy as np

    name = describe(value)
    try:
        if isinstance(value, np.ndarray):
            return value.astype(np.float32)
        if isinstance(value, dict) and value.get("array") is not None:
            samples, source_rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
            check_audio(name, samples.shape[-1], source_rate, 1, rate)
            return resample(samples, source_rate, rate)
        if isinstance(value, dict) and value.get("bytes"):
            import soundfile

            with soundfile.SoundFile(io.BytesIO(value["bytes"])) as f:
                check_audio(name, f.frames, f.samplerate, f.channels, rate)
                source_rate, samples = f.samplerate, f.read(dtype="float32", always_2d=True)
            return resample(samples.mean(axis=1), source_rate, rate)
        samples = decode_audio(media_source(value["path"] if isinstance(value, dict) else value), rate, name)
        if samples.size == 0:
            raise ValueError("it holds no samples")
        return samples
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"audio {name!r} cannot be read: {first_line(str(exc))[:200]}") from None


def decode_audio(source: str | bytes, rate: int, name: str) -> Any:
    """Transformers' soundfile decoding (`audio_utils._load_audio_soundfile`: a mean downmix, `soxr_hq`
    resampling, the length padded or cut to `ceil(frames * rate / source rate)`), after `check_audio` on the
    header."""
    import numpy as np
    import soundfile
    import soxr

    with soundfile.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
        check_audio(name, f.frames, f.samplerate, f.channels, rate)
        source_rate = f.samplerate
        waveform = f.read(dtype="float32", always_2d=True).T
    waveform = waveform.mean(axis=0) if waveform.shape[0] > 1 else waveform[0]
    if source_rate != rate:
        length = math.ceil(waveform.shape[-1] * rate / source_rate)
        waveform = soxr.resample(waveform, source_rate, rate, quality="soxr_hq")
        waveform = np.pad(waveform, (0, max(0, length - len(waveform))))[:length]
    return np.ascontiguousarray(waveform, dtype=np.float32)


def check_audio(name: str, frames: int, source_rate: int, channels: int, rate: int) -> None:
    """InputError when a clip of `frames` samples at `source_rate` Hz is longer than `input.max_audio_s`, or when
    decoding and resampling it to `rate` Hz would not fit in the free memory."""
    if source_rate <= 0:
        raise InputError(f"audio {name!r} says its sample rate is {source_rate} Hz; it cannot be decoded")
    seconds = frames / source_rate
    if seconds > BUDGETS.max_audio_s:
        raise InputError(
            f"audio {name!r} is {seconds:,.0f} s long ({frames:,} samples at {source_rate:,} Hz, from its header), "
            f"over the limit of {BUDGETS.max_audio_s:,.0f} s per clip (input.max_audio_s); cut it into "
            "shorter clips, one record each"
        )
    out = math.ceil(frames * rate / source_rate)
    need = 4 * (frames * channels + frames + 2 * out)  # float32: decoded, downmixed, resampled (and soxr's copy)
    check_memory(f"audio {name!r} ({seconds:,.0f} s)", need, "cut it into shorter clips, one record each")


def check_memory(what: str, need_bytes: float, fix: str) -> None:
    """InputError when `need_bytes` exceed `MEMORY_HEADROOM` of the memory free now."""
    free = ram_free_mb() * MEMORY_HEADROOM
    if need_bytes / MB > free:
        raise InputError(
            f"{what} needs ~{need_bytes / MB:,.0f} MB to decode, more than the {free:,.0f} MB of memory free "
            f"({MEMORY_HEADROOM:.0%} of what is available); {fix}"
        )


def resample(samples: Any, source_rate: int, rate: int) -> Any:
    if source_rate == rate:
        return samples
    import soxr

    return soxr.resample(samples, source_rate, rate)


def media_source(path: str) -> str | bytes:
    """A local file's path, or the bytes of a URL (`fetch`) or of a `data:...;base64,` URI."""
    if path.startswith(("http://", "https://")):
        return fetch(path)
    if path.startswith("data:"):
        return base64.b64decode(path.split(",", 1)[-1], validate=False)
    return check_exists(path)


def check_exists(path: str) -> str:
    """A local path must exist (Transformers would read any other string as base64 data)."""
    if not path.startswith(("http://", "https://", "data:")) and not Path(path).expanduser().is_file():
        raise FileNotFoundError("no such file")
    return str(Path(path).expanduser()) if not path.startswith(("http://", "https://", "data:")) else path


# URLs: a total deadline and a byte cap


class Deadline:
    """A total time limit for one download: when it passes, every socket the download opened is shut down, so
    a read blocked on a slow server returns at once (a socket timeout only bounds each read)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                self.shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                self.shut(sock)

    @staticmethod
    def shut(sock: socket.socket) -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """A urllib handler whose connections report their sockets to a `Deadline`."""

    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        deadline = self.deadline

        class Watched(http_class):
            def connect(self) -> None:
                super().connect()
                deadline.watch(self.sock)

        return super().do_open(Watched, req, **kwargs)  # type: ignore[misc]


class _HTTP(_Watched, urllib.request.HTTPHandler):
    pass


class _HTTPS(_Watched, urllib.request.HTTPSHandler):
    pass


def fetch(url: str) -> bytes:
    """The body of `url`, read within `input.fetch_timeout_s` seconds in all and at most `input.max_fetch_mb`
    (also held to the free memory); InputError naming the limit otherwise."""
    deadline = Deadline(BUDGETS.fetch_timeout_s)
    cap = int(min(BUDGETS.max_fetch_mb * MB, ram_free_mb() * MEMORY_HEADROOM * MB))
    opener = urllib.request.build_opener(_HTTP(deadline), _HTTPS(deadline))
    request = urllib.request.Request(url, headers={"User-Agent": "omnirun"})
    too_slow = (
        f"{url!r} did not arrive within {BUDGETS.fetch_timeout_s:g} s (input.fetch_timeout_s, the limit "
        "for the whole download); use a faster server, or download the file and give its path"
    )
    too_big = (
        f"over the limit of {cap:,} bytes per media URL (input.max_fetch_mb, and the free "
        "memory); download the file and give its path, or a smaller file"
    )
    deadline.timer.start()
    try:
        with opener.open(request, timeout=BUDGETS.fetch_timeout_s) as response:
            length = response.headers.get("Content-Length", "")
            if length.strip().isdigit() and int(length) > cap:
                raise InputError(f"{url!r} says it is {int(length):,} bytes, {too_big}")
            chunks, size = [], 0
            while chunk := response.read1(CHUNK):
                size += len(chunk)
                if size > cap:
                    raise InputError(f"{url!r} sent more than {cap:,} bytes, {too_big}")
                chunks.append(chunk)
            if deadline.expired:  # the shutdown ended the body early
                raise InputError(too_slow)
            return b"".join(chunks)
    except InputError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        if deadline.expired:
            raise InputError(too_slow) from None
        raise InputError(f"{url!r} cannot be downloaded: {first_line(str(exc))[:200]}") from None
    finally:
        deadline.timer.cancel()
