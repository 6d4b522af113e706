"""The one Dask client set-up: a scheduler's cluster, or an embedded ``LocalCluster`` of single-threaded processes.

Used by ``classify --scheduler/--workers`` (:mod:`.dask_run`) and by the
trainer's ``sasview-bnn-train simulate`` (``sasview_bnn_trainer.simulation.runner``);
each says how long to wait for a scheduler, which error names one that cannot
be reached, and how its embedded cluster differs (address, dashboard, Dask
configuration). Needs dask and distributed (the ``[dask]`` extra); the caller
checks they are installed.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Mapping


@contextlib.contextmanager
def dask_client(
    scheduler: str | None,
    workers: int | None,
    *,
    connect_timeout: str,
    unreachable: Callable[[str, BaseException], Exception],
    config: Mapping[str, Any] | None = None,
    **cluster_options: Any,
) -> Iterator[Any]:
    """A ``distributed.Client`` of the cluster at ``scheduler``, or of an embedded ``LocalCluster``.

    ``scheduler`` (``tcp://host:port``): connect, waiting up to ``connect_timeout``;
    a scheduler that cannot be reached raises ``unreachable(scheduler, error)``.
    Otherwise ``workers`` processes of one thread each, logs below ERROR
    silenced, ``cluster_options`` passed on to ``LocalCluster`` and ``config``
    set (``dask.config.set``) while the cluster runs (its nannies hand the
    configuration in force when they start to their workers). An existing
    cluster keeps its own settings.
    """
    import dask
    import distributed

    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError) as err:
            raise unreachable(scheduler, err) from None
        with client:
            yield client
        return
    with dask.config.set(dict(config or {})), distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, silence_logs=logging.ERROR, **cluster_options
    ) as cluster, distributed.Client(cluster) as client:
        yield client
