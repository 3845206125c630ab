"""The system's processes for tests: they live in `devstack.processes` (the benchmarks use them too)."""

from devstack.processes import Process, api, faust_worker, logs, projections_worker, relay

__all__ = ["Process", "api", "faust_worker", "logs", "projections_worker", "relay"]
