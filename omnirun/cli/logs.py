"""Logging for a run: the console gets omnirun's warnings, the run directory's omnirun.log gets INFO and up;
errors reach the user as one line with the documented exit status."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from omnirun.errors import OmnirunError, first_line
from omnirun.rundir import RunDir
from omnirun.secrets import redact

log = logging.getLogger("omnirun")


def report_and_exit(exc: Exception, run: RunDir | None) -> NoReturn:
    """One line on stderr (no traceback) and the error's exit status: 2 for config and input errors."""
    if isinstance(exc, OmnirunError):
        message, code = str(exc), exc.exit_code
    else:
        message, code = f"{type(exc).__name__}: {first_line(str(exc))} (run with debug=true for the traceback)", 1
    print(f"error: {redact(message)}", file=sys.stderr)
    if run is not None:
        print(f"run directory: {run}", file=sys.stderr)
    sys.exit(code)


def setup_logging(debug: bool) -> None:
    """Console: omnirun's own messages and warnings; the run's omnirun.log gets INFO and up."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.DEBUG if debug else logging.WARNING)
            handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("omnirun").setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if not debug:
        quiet_transformers()


def quiet_transformers() -> None:
    """Transformers' warnings off, without importing it (~1 s, and it pulls in torch, which a llama.cpp run
    needs neither of): it reads TRANSFORMERS_VERBOSITY when first imported. Its weight-loading progress bar
    stays: on a large model that is long work."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.set_verbosity_error()


class RedactingFormatter(logging.Formatter):
    """Never lets a secret (a hub token, any secret environment variable's value) into a log or the console."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


@contextmanager
def file_log(path: Path) -> Iterator[None]:
    """Log INFO and up into the run directory while the run lasts."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
