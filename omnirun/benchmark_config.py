"""`benchmark.*`: the controlled workload task=benchmark measures (a schema of the run config, beside
`omnirun.config`'s others)."""

from __future__ import annotations

from dataclasses import dataclass

from omnirun.errors import ConfigError


@dataclass
class BenchmarkConfig:
    batch_size: int = 1
    """Sequences per `generate` call."""
    prompt_tokens: int = 32
    """Length of each synthetic prompt, in tokens (random ids, fixed seed); ignored with real inputs."""
    new_tokens: int = 32
    """Tokens generated per sequence; forced (min_new_tokens = max_new_tokens)."""
    warmup_runs: int = 2
    """Calls made after the cold first call and before measuring; never reported."""
    min_iterations: int = 10
    """Measure at least this many calls..."""
    min_duration_s: float = 10.0
    """...and for at least this long (both must be reached)."""
    max_iterations: int = 10_000
    """Stop after this many calls even if min_duration_s is not reached."""
    max_spread_pct: float = 10.0
    """Flag the run as unstable when the generate phase's stdev exceeds this share of its mean."""

    def validate(self) -> None:
        for name in ("batch_size", "prompt_tokens", "new_tokens", "min_iterations", "max_iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"benchmark.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_runs < 0 or self.min_duration_s < 0:
            raise ConfigError("benchmark.warmup_runs and benchmark.min_duration_s must be >= 0")
        if self.max_iterations < self.min_iterations:
            raise ConfigError(
                f"benchmark.max_iterations ({self.max_iterations}) must be >= min_iterations ({self.min_iterations})"
            )
