"""Media budgets: nothing is decoded or downloaded past a limit before it is checked. Images are refused from
their header's size, audio from its header's frames and rate, URLs by a total deadline and a byte cap; each
refusal is an InputError naming the limit (the record's error row), raised before the allocation (checked with
budgets far below the real sizes, and by spying on the decoders)."""

from __future__ import annotations

import contextlib
import http.server
import io
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from omnirun.errors import InputError
from omnirun.inputs import media


def wav_bytes(samples: int, rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV of `samples` frames whose header says `rate` Hz."""
    pcm = (np.sin(np.arange(samples * channels) / 7.0) * 8000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


# images


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "BUDGETS", media.Budgets(max_image_pixels=100 * 100))
    calls: list[str] = []
    real_convert = Image.Image.convert

    def convert(self: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
        calls.append("convert")
        return real_convert(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", convert)
    with pytest.raises(
        InputError, match=r"is 200x100 = 20,000 pixels, over the limit of 10,000 .*input.max_image_pixels"
    ):
        media.load_image({"bytes": png_bytes(200, 100)})
    assert calls == []  # never decoded
    assert media.load_image({"bytes": png_bytes(100, 100)}).size == (100, 100)


def test_pils_decompression_bomb_check_is_the_records_error_not_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns past it and raises past twice it
    for width in (40, 100):  # 1600 pixels: PIL's warning; 4000: its error
        with pytest.raises(InputError, match="refused before decoding: Image size"):
            media.load_image({"bytes": png_bytes(width, 40)})


def test_an_image_larger_than_the_free_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "ram_free_mb", lambda: 0.05)
    with pytest.raises(InputError, match=r"image .*\(200x100\) needs ~0 MB to decode, more than the 0 MB"):
        media.load_image({"bytes": png_bytes(200, 100)})


def test_a_data_uri_image_is_read(tmp_path: Path) -> None:
    import base64

    uri = "data:image/png;base64," + base64.b64encode(png_bytes(8, 6)).decode()
    assert media.load_image(uri).size == (8, 6)


# audio


def test_a_clip_whose_header_says_1_hz_is_refused_before_resampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One second of samples at 16 kHz, but the header says 1 Hz: 16,000 s long, which resampled to 16 kHz would
    be 256 M samples (1 GB). Refused from the header; soxr is never called."""
    path = tmp_path / "one-hz.wav"
    path.write_bytes(wav_bytes(16000, rate=1))
    import soxr

    monkeypatch.setattr(soxr, "resample", lambda *a, **k: pytest.fail("resampled before the check"))
    with pytest.raises(InputError, match=r"is 16,000 s long \(16,000 samples at 1 Hz.*over the limit of 3,600 s"):
        media.load_audio(str(path), 16000)
    with pytest.raises(InputError, match="input.max_audio_s"):
        media.load_audio({"bytes": path.read_bytes(), "path": "x.wav"}, 16000)
    with pytest.raises(InputError, match="16,000 s long"):
        media.load_audio({"array": np.zeros(16000), "sampling_rate": 1}, 16000)


def test_a_long_clip_is_refused_from_its_header_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3-hour WAV, as the budget sees it: a 2 s clip under a 1 s limit; soundfile's read is never called."""
    import soundfile

    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(32000, rate=16000, channels=2))
    monkeypatch.setattr(media, "BUDGETS", media.Budgets(max_audio_s=1.0))
    monkeypatch.setattr(soundfile.SoundFile, "read", lambda *a, **k: pytest.fail("decoded before the check"))
    with pytest.raises(InputError, match=r"audio '.*long.wav' is 2 s long \(32,000 samples at 16,000 Hz"):
        media.load_audio(str(path), 16000)


def test_a_clip_larger_than_the_free_memory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes(16000, rate=8000))
    monkeypatch.setattr(media, "ram_free_mb", lambda: 0.1)
    with pytest.raises(InputError, match=r"audio .*a.wav' \(2 s\) needs ~0 MB to decode, more than the 0 MB"):
        media.load_audio(str(path), 16000)


def test_decoding_matches_transformers(tmp_path: Path) -> None:
    """The samples are Transformers' `load_audio(backend="soundfile")`'s, bit for bit (stereo, resampled)."""
    from transformers.audio_utils import load_audio

    path = tmp_path / "s.wav"
    path.write_bytes(wav_bytes(8001, rate=8000, channels=2))
    ours = media.load_audio(str(path), 16000)
    theirs = load_audio(str(path), sampling_rate=16000, backend="soundfile")
    assert ours.dtype == np.float32 and np.array_equal(ours, theirs)


# URLs


class Server:
    """A local HTTP server whose handler is `serve(handler)`, on a daemon thread."""

    def __init__(self, serve: Any) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with contextlib.suppress(OSError):  # the client hung up
                    serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/x.png"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def serve() -> Iterator[Any]:
    servers: list[Server] = []

    def start(handler: Any) -> str:
        servers.append(Server(handler))
        return servers[-1].url

    yield start
    for server in servers:
        server.close()


def headers(h: Any, length: int | None = None) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/octet-stream")
    if length is not None:
        h.send_header("Content-Length", str(length))
    h.end_headers()
    h.wfile.flush()


def test_a_url_that_sends_a_byte_at_a_time_stops_at_the_total_deadline(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each byte comes well within any per-read timeout; the total deadline (1 s here) ends it anyway."""

    def drip(h: Any) -> None:
        headers(h, 1000)
        for _ in range(100):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.2)

    monkeypatch.setattr(media, "BUDGETS", media.Budgets(fetch_timeout_s=1.0))
    url = serve(drip)
    start = time.monotonic()
    with pytest.raises(InputError, match=r"did not arrive within 1 s \(input.fetch_timeout_s"):
        media.load_image(url)
    assert time.monotonic() - start < 3


def test_a_url_that_drips_its_headers_stops_at_the_total_deadline(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def drip(h: Any) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.2)

    monkeypatch.setattr(media, "BUDGETS", media.Budgets(fetch_timeout_s=1.0))
    start = time.monotonic()
    with pytest.raises(InputError, match="did not arrive within 1 s"):
        media.load_audio(serve(drip), 16000)
    assert time.monotonic() - start < 3


def test_an_endless_body_stops_at_the_byte_cap(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def endless(h: Any) -> None:
        headers(h)
        block = b"\0" * 65536
        for _ in range(10_000):
            h.wfile.write(block)

    monkeypatch.setattr(media, "BUDGETS", media.Budgets(max_fetch_mb=1))
    with pytest.raises(InputError, match=r"sent more than 1,048,576 bytes, over the limit .*input.max_fetch_mb"):
        media.load_image(serve(endless))


def test_a_declared_length_over_the_cap_is_refused_before_reading(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def huge(h: Any) -> None:
        headers(h, 10**12)
        h.wfile.write(b"\0" * 1000)

    with pytest.raises(InputError, match=r"says it is 1,000,000,000,000 bytes, over the limit"):
        media.load_image(serve(huge))


def test_a_url_within_the_limits_is_read(serve: Any) -> None:
    body = png_bytes(12, 10)

    def ok(h: Any) -> None:
        headers(h, len(body))
        h.wfile.write(body)

    assert media.load_image(serve(ok)).size == (12, 10)


def test_a_missing_url_is_the_records_error(serve: Any) -> None:
    def missing(h: Any) -> None:
        h.send_error(404)

    with pytest.raises(InputError, match="cannot be downloaded: HTTP Error 404"):
        media.load_image(serve(missing))


def test_the_budgets_are_the_runs_input_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """input.max_image_pixels / max_audio_s / fetch_timeout_s / max_fetch_mb: checked, and what the media
    checks of the process read (the runner sets them when it builds the engine)."""
    from omnirun.config import InputConfig, RunConfig
    from omnirun.errors import ConfigError

    monkeypatch.setattr(media, "BUDGETS", media.Budgets())
    media.set_budgets(InputConfig(max_audio_s=5.0, max_image_pixels=100))
    assert media.BUDGETS == media.Budgets(max_image_pixels=100, max_audio_s=5.0)
    for key in ("max_image_pixels", "max_audio_s", "fetch_timeout_s", "max_fetch_mb"):
        config = InputConfig()
        setattr(config, key, 0)
        with pytest.raises(ConfigError, match=f"input.{key} must be a positive number"):
            RunConfig(input=config).validate()
