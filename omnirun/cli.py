"""`python -m omnirun k=v ...`: the only place that touches Hydra and the raw config tree.

Before Hydra runs, every override (each value of a sweep, too) is composed and validated, so a typo, an
unknown option or a bad value fails with one line and exit status 2 before any model loads.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from omnirun.config import RunConfig, register_configs
from omnirun.errors import ConfigError, OmnirunError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
GROUPS = ("model", "hardware", "generation", "task", "tracking")
log = logging.getLogger("omnirun")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    register_configs()
    reruns = [a for a in argv if a.startswith("rerun=")]
    if reruns:
        try:
            rerun(reruns[0].split("=", 1)[1], [a for a in argv if a not in reruns])
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        return
    overrides = [a for a in argv if not a.startswith("-")]
    raw = None
    if not any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):  # not --help, --cfg, ...
        try:
            raw = preflight(overrides)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    flags = [a for a in argv if a in ("-m", "--multirun")]  # Hydra wants its flags before the overrides
    if raw is not None and not flags and not any(o.lstrip("+~").startswith("hydra") for o in overrides):
        run_single(raw, overrides)  # Hydra's launcher adds nothing to one run; its second composition is ~1 s
        return
    overrides = [a for a in argv if a not in flags]
    if flags:
        try:
            overrides += sweep_resume_overrides(overrides)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [sys.argv[0], *flags, *overrides]
    hydra_entry()


def sweep_resume_overrides(overrides: list[str]) -> list[str]:
    """`-m ... resume=<sweep dir>|latest` reruns into that sweep directory (finished jobs are skipped)."""
    from omnirun import resume

    values = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith(("+", "~")))
    if "resume" not in values or values["resume"] in ("null", "None", ""):
        return []
    target = resume.sweep_dir(values["resume"], values.get("output.root", "outputs"))
    return [f"hydra.sweep.dir={target}"]


def preflight(overrides: list[str]) -> Any:
    """Compose and validate the config for every value of every override; raise ConfigError on the first
    problem, phrased for the user. Returns the composed tree of the first combination (the run itself when
    nothing sweeps)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    mine = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(mine)
    except OverrideParseException as exc:
        raise ConfigError(f"cannot parse overrides: {first_line(str(exc))}") from None
    base = [o.input_line if not o.is_sweep_override() else next(iter(sweep_values(o))) for o in parsed]
    trials = [base]
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            trials += [[*base[:i], value, *base[i + 1 :]] for value in list(sweep_values(o))[1:]]
    composed = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for trial in trials:
            try:
                composed.append(compose(config_name="config", overrides=trial))
                to_run_config(composed[-1])
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(explain(exc)) from None
    return composed[0]


def sweep_values(override: Any) -> Any:
    key = override.get_key_element()
    return (f"{key}={v}" for v in override.sweep_string_iterator())


def to_run_config(raw: Any) -> RunConfig:
    """The raw tree → a validated RunConfig; no OmegaConf object passes below this point."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(raw)
    assert isinstance(cfg, RunConfig)
    return cfg.validate()


def explain(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error: the key, the rule, the value and the way out."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, ConfigKeyError | ValidationError):
        cause = cause.__cause__
    text = str(exc)
    if "Could not find '" in text:  # an unknown option of a config group
        missing = text.split("Could not find '", 1)[1].split("'", 1)[0]
        group, _, option = missing.rpartition("/")
        if group in GROUPS:
            return f"{group}={option} is not an option; choose one of: {', '.join(group_options(group))}"
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) or "No match in the defaults list" in text:
        key = getattr(cause, "full_key", None) or (text.split("'", 2)[1] if "'" in text else "?")
        return f"unknown config key '{key}'; {valid_keys_hint(str(key))}"
    if isinstance(cause, ValidationError):
        key = getattr(cause, "full_key", "?")
        return f"{key}: {first_line(str(getattr(cause, 'msg', cause)))}"
    return first_line(text)


def valid_keys_hint(key: str) -> str:
    """The keys valid where `key` was typed: under its deepest existing parent group, else at the top."""
    import dataclasses

    node: Any = RunConfig()
    prefix: list[str] = []
    for part in key.split(".")[:-1]:
        child = getattr(node, part, None)
        if not dataclasses.is_dataclass(child):
            break
        node, prefix = child, [*prefix, part]
    names = ", ".join(f.name for f in dataclasses.fields(node))
    return f"valid keys under {'.'.join(prefix)}: {names}" if prefix else f"valid keys: {names}"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def _hydra_main() -> Any:
    import hydra

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def entry(raw: Any) -> str:
        return run_job(raw)

    return entry


def hydra_entry() -> None:
    _hydra_main()()


def run_single(raw: Any, overrides: list[str]) -> None:
    """One run, without Hydra's launcher: the same typed config and files as a Hydra single run."""
    from omegaconf import OmegaConf

    execute(to_run_config(raw), OmegaConf.to_yaml(raw, resolve=True), overrides, None)


def run_job(raw: Any) -> str:
    """One Hydra job: the typed config and where it runs, from Hydra's state."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    sweep_job = Path(hc.runtime.output_dir) if hc.mode == RunMode.MULTIRUN else None
    cfg = to_run_config(raw)
    return execute(cfg, OmegaConf.to_yaml(raw, resolve=True), list(hc.overrides.task), sweep_job)


def execute(cfg: RunConfig, resolved: str, overrides: list[str], sweep_job: Path | None) -> str:
    """Build the run directory, run, record the outcome. In a sweep (`sweep_job` set) a failure is recorded
    and the sweep goes on; a single run exits with the error's status."""
    from omnirun import distributed, outputs, resume, runner

    setup_logging(cfg.debug)
    rank = distributed.current()
    if rank is not None and (sweep_job is not None or cfg.resume is not None or str(cfg.task.name) == "benchmark"):
        report_and_exit(ConfigError("a data-parallel launch runs one job: no sweep, resume or task=benchmark"), None)
    run_dir: Path | None = None
    try:
        if sweep_job is not None:  # the job directory exists first, so that a failure below is recorded in it
            run_dir = sweep_job
            run_dir.mkdir(parents=True, exist_ok=True)
            outputs.write_overrides(run_dir, overrides)  # so that even a job failing below is identifiable
            if cfg.resume is not None and job_status(run_dir) == "completed":
                print(f"job {run_dir.name}: already completed, skipped")
                return "completed"
        data, info = runner.check(cfg)
        if run_dir is not None:
            resuming = cfg.resume is not None and (run_dir / "config.yaml").exists()
        elif cfg.resume is not None:
            run_dir, resuming = resume.find_run_dir(cfg), True
        else:
            main_dir = None
            if rank is None or rank.is_main:
                main_dir = outputs.new_run_dir(cfg.output.root, str(cfg.task.name), cfg.model.name)
            run_dir, resuming = distributed.from_main(main_dir, rank), False
        log_name = "omnirun.log" if rank is None else f"omnirun.rank{rank.index}.log"
        with file_log(run_dir / log_name):
            result = runner.run(cfg, run_dir, data, info, resolved, overrides, resuming=resuming, rank=rank)
    except KeyboardInterrupt as exc:
        if run_dir is not None:
            record_failure(run_dir, exc)
        print(f"\ninterrupted; finished records are kept. Continue with: resume={run_dir}", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if run_dir is not None:
            record_failure(run_dir, exc)
        if sweep_job is not None:
            log.error("job %s failed: %s", run_dir, exc)
            return "failed"
        if cfg.debug:
            raise
        report_and_exit(exc, run_dir)
    if rank is None or rank.is_main:
        runner.print_summary(result, run_dir)
    return "completed"


def rerun(run_dir: str, overrides: list[str]) -> None:
    """`python -m omnirun rerun=<run dir> [key=value ...]`: the run's saved config.yaml, run again into a new
    run directory (a benchmark repeats with the same settings)."""
    from omegaconf import OmegaConf

    saved = Path(run_dir).expanduser() / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"rerun={run_dir!r} is not a run directory (no config.yaml there); check the path")
    try:
        raw = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(saved), OmegaConf.from_dotlist(overrides))
        cfg = to_run_config(raw)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"rerun={run_dir!r}: {explain(exc)}") from None
    cfg.resume = None
    execute(cfg, OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True), [f"rerun={run_dir}", *overrides], None)


def job_status(run_dir: Path) -> str | None:
    import json

    path = run_dir / "metrics.json"
    return json.loads(path.read_text()).get("status") if path.exists() else None


def report_and_exit(exc: Exception, run_dir: Path | None) -> NoReturn:
    """One line on stderr (no traceback) and the error's exit status: 2 for config and input errors."""
    if isinstance(exc, OmnirunError):
        message, code = str(exc), exc.exit_code
    else:
        message, code = f"{type(exc).__name__}: {first_line(str(exc))} (run with debug=true for the traceback)", 1
    print(f"error: {message}", file=sys.stderr)
    if run_dir is not None:
        print(f"run directory: {run_dir}", file=sys.stderr)
    sys.exit(code)


def record_failure(run_dir: Path, exc: BaseException) -> None:
    from omnirun import outputs

    (run_dir / "error.txt").write_text(outputs.redact("".join(traceback.format_exception(exc))))
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        outputs.write_json(metrics_path, {"schema_version": 1, "status": status, "error": first_line(str(exc))})


def setup_logging(debug: bool) -> None:
    """Console: omnirun's own messages and warnings; the run's omnirun.log gets INFO and up."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.DEBUG if debug else logging.WARNING)
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
    """Never lets a hub token into a log file."""

    def format(self, record: logging.LogRecord) -> str:
        from omnirun.outputs import redact

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
