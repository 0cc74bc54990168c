"""Dask clusters for parallel search trials: a LocalCluster we start and close, or an existing scheduler."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from adaprune_edge.errors import ConfigError


@contextlib.contextmanager
def dask_client(workers: int = 1, scheduler: str | None = None, timeout_s: float = 10.0) -> Iterator[Any]:
    """Yield a dask Client: connected to `scheduler` (tcp://host:port), or to a LocalCluster of `workers`
    single-threaded worker processes. Always closed on exit (SMAC's own n_workers>1 path hangs at exit)."""
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout=timeout_s)
            except (OSError, TimeoutError) as e:
                raise ConfigError(f"dask scheduler {scheduler} is unreachable ({type(e).__name__}); "
                                  "check the address or drop --scheduler to run locally") from None
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=50)
            client = Client(cluster)
    except ConfigError:
        raise
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
