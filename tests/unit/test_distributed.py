"""Past one process: parallel and SLURM-style sweeps through Hydra launchers, data parallelism with
torchrun/accelerate, and MLflow tracking."""

from __future__ import annotations

from omnirun.cli import preflight as cli


def test_shipped_launcher_configs_compose() -> None:
    from hydra import compose, initialize_config_dir

    from omnirun.confstore import register_configs

    register_configs()
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        for launcher, target in (
            ("parallel", "JoblibLauncher"),
            ("slurm", "SlurmLauncher"),
            ("local", "LocalLauncher"),
        ):
            cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
