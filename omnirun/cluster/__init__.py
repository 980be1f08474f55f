"""Where a run executes: `cluster=local` (this machine: one process, or `accelerate launch` / `torchrun` ranks)
or `cluster=ray` (a pool of Ray actors, each holding one engine built by the same `engine.build`; the driver
writes the same run directory a single process would). Importing this package does not import Ray."""

from omnirun.cluster.config import ClusterConfig, ClusterKind

__all__ = ["ClusterConfig", "ClusterKind"]
