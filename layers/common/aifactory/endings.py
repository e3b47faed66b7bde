"""Ending a job that never trained: its staged data deleted, its status set, its one callback.

Staging ends a job this way when it fails or is stopped; scheduling and the notifier do when
a job is stopped or refused while it waits for capacity.
"""

from typing import Any

from aifactory import metrics, timefmt
from aifactory.layout import manifest_key, shard_key
from aifactory.log import logger
from aifactory.runtime import Runtime


def _staged_shards(job: dict[str, Any]) -> int:
    """How many shards the job's staging checkpoint holds."""
    return len((job.get("staging") or {}).get("shards") or [])


def abandon(rt: Runtime, job_name: str, status: str, reason: str | None = None) -> None:
    """End a job that never trained and delete what was staged, so nothing is left to train on."""
    job = rt.store.get(job_name) or {}
    written = _staged_shards(job)
    # The shards of the checkpoint, and the next ones an interrupted invocation may have
    # completed before it could checkpoint them.
    keys = [shard_key(job_name, n) for n in range(written + 2)] + [manifest_key(job_name)]
    try:
        rt.storage.delete(keys)
    except Exception:  # the bucket's lifecycle rule expires it in the end
        logger.exception("could not delete a staged dataset", extra={"job_name": job_name})
    _end(rt, job_name, status, reason)


def _end(rt: Runtime, job_name: str, status: str, reason: str | None) -> None:
    """End a job before SageMaker ever saw it, and send its one callback."""
    # Imported here: a job rarely ends this way, and a cold start need not load callbacks.
    from aifactory import callbacks

    if rt.store.finish(job_name, status, reason=reason, end_time=timefmt.to_iso(timefmt.now())):
        logger.info("job ended during staging", extra={"job_name": job_name, "status": status})
        metrics.job_ended(status)
    callbacks.start_delivery(rt, job_name)
