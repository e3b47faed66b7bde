"""Staging: page through the client's dataset endpoint into S3, then start SageMaker training.

One invocation of StageFn (one StageQueue message) works like this:

1. It takes ownership of the job's staging checkpoint in the job record (a `staging` map).
   The message's continuation number must match the checkpoint's, so a stale message does
   nothing, and a second invocation for the same job takes over from the first.
2. A bounded window of pages is fetched concurrently (``StagingConcurrency`` in flight),
   each page retried on transient faults with tenacity (capped exponential backoff with full
   jitter, ``Retry-After`` honoured up to a cap). Records are written in page order,
   whatever order the answers arrive in.
3. Records go into shards, ``datasets/<job>/train/part-00000.jsonl`` and on, each at most
   ``StagingShardBytes`` and each one complete S3 object, created only if its key is free.
   After each shard the checkpoint records the next position, the shards and the counts.
4. Near the Lambda time limit the open shard is closed, the checkpoint written and a
   continuation message queued; the invocation then returns successfully. A crash resumes
   from the last checkpoint; the records after it are fetched again.
5. At the end ``manifest.json`` is written, last, and the training job is created.

A failure or a stop deletes what was staged, so nothing is left for training.
"""

import hashlib
import json
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from itertools import accumulate
from typing import Any, NamedTuple
from urllib.parse import urlencode

import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_random_exponential

from aifactory import endings, metrics, scheduling, timefmt
from aifactory.adapters import ShardExists, ShardUpload
from aifactory.egress import header_problem, redact_url
from aifactory.errors import EgressError, StagingFailed, StagingStopped
from aifactory.layout import CONTENT_TYPE, manifest_key, shard_key
from aifactory.log import for_job, logger
from aifactory.runtime import Runtime

# The StageQueue's redrive policy (maxReceiveCount) in template.yaml.
STAGE_MAX_RECEIVES = 3
# The checkpoint lives in the job record (at most 400 KB): this many shards fit with room.
MAX_SHARDS = 2000
# Statuses that retry a page: request timeout, throttling and server errors.
RETRIED_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# Each record as one compact JSON line, written by orjson in one call with its newline; the
# standard library's encoder (built once: json.dumps builds one per call) writes the pages
# orjson cannot stage exactly (see page_lines).
_LINE = orjson.OPT_APPEND_NEWLINE
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# -- the checkpoint ----------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """Where staging stands, as stored in the job record after each shard.

    The next record to stage is record `skip` of page `next_page` (pages counted from
    begin_offset). Everything before it is in `shards`.
    """

    continuations: int = 0
    next_page: int = 0
    skip: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    pages: int = 0
    bytes: int = 0
    retries: int = 0

    @classmethod
    def from_item(cls, item: dict[str, Any] | None) -> "Checkpoint":
        item = dict(item or {})
        item.pop("owner", None)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in item.items() if k in known})

    def to_item(self) -> dict[str, Any]:
        return asdict(self)


# -- fetching pages ----------------------------------------------------------------------------
class Page(NamedTuple):
    records: int  # records on the page
    data: bytes  # the records as JSON Lines, one line each, in order
    ends: list[int]  # where each record's line ends in `data`


class _Malformed(Exception):
    """The page is not JSON, or holds a value JSON Lines cannot carry (NaN, a lone surrogate)."""


class _NoRecords(Exception):
    """The page is JSON without the records key holding a list."""


def page_lines(body: bytes, key: str) -> Page:
    """The records of a page's JSON body (the list under `key`) as compact JSON Lines.

    Each record is written once: orjson reads the page and writes each record, its newline
    included, and the lines are joined once. Some pages orjson reads or writes differently
    from the standard library, and those are staged with the standard library instead, as
    they always were: bodies orjson refuses (UTF-16, a byte-order mark, a lone surrogate:
    the standard library then accepts or refuses them as before), records it cannot write
    (nested deeper than it writes), and any page with a number of 1e16 or more, which orjson
    writes with an exponent ("1e+16"): an integer beyond 64 bits is among those, and orjson
    reads it as a float, so it would not be staged exactly. Otherwise only the spelling of a
    float may differ from the standard library's, never its value (0.00001 for 1e-05).
    """
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        records = _records_of(page, key)
        try:
            lines = [orjson.dumps(record, option=_LINE) for record in records]
        except orjson.JSONEncodeError:
            pass
        else:
            data = b"".join(lines)
            if b"e+" not in data:
                return Page(len(lines), data, list(accumulate(map(len, lines))))
    try:
        page = json.loads(body, parse_constant=_reject_constant)
        records = _records_of(page, key)
        lines = [(_ENCODER.encode(record) + "\n").encode() for record in records]
    except (ValueError, RecursionError):
        raise _Malformed() from None
    return Page(len(lines), b"".join(lines), list(accumulate(map(len, lines))))


def _records_of(page: Any, key: str) -> list[Any]:
    records = page.get(key) if isinstance(page, dict) else None
    if not isinstance(records, list):
        raise _NoRecords()
    return records


class _Transient(Exception):
    """A page answer that may be different next time (a fault worth retrying)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Cancelled(Exception):
    """The window was closed while the page was waiting for its next attempt."""


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - timefmt.now()).total_seconds())


class _RetryAfterOrJitter(wait_base):
    """Retry-After when the answer gave one (up to its cap), else capped full jitter."""

    def __init__(self, base: float, cap: float, retry_after_cap: float) -> None:
        self.jitter = wait_random_exponential(multiplier=base, max=cap)
        self.retry_after_cap = retry_after_cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_cap)
        return float(self.jitter(retry_state))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def unsendable_header(headers: dict[str, str]) -> str | None:
    """The name of the first header HTTP/1.1 cannot carry, else None (values never shown)."""
    for name, value in headers.items():
        if header_problem(name, value):
            return repr(name) if isinstance(name, str) else "a header"
    return None


class PageFetcher:
    """Fetches one page of the dataset endpoint, retrying transient faults."""

    def __init__(self, rt: Runtime, endpoint: dict[str, Any], headers: dict[str, str]) -> None:
        self.rt = rt
        self.endpoint = endpoint
        self.headers = headers
        self.cancelled = threading.Event()
        self.retries = 0
        self._lock = threading.Lock()
        settings = rt.settings
        self.attempts = settings.staging_max_page_attempts
        # One policy for every page: tenacity keeps each call's state per thread, so the
        # window's threads share it (building one per page cost more than parsing the page).
        self._retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=_RetryAfterOrJitter(
                settings.staging_retry_base_seconds,
                settings.staging_retry_max_seconds,
                settings.staging_retry_after_max_seconds,
            ),
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )

    def fetch(self, offset: int, page_size: int) -> Page:
        try:
            return self._retrying(self._attempt, offset, page_size)
        except _Transient as exc:
            tries = "once" if self.attempts == 1 else f"{self.attempts} times"
            raise StagingFailed(f"{exc} (tried {tries})") from None

    def _sleep(self, seconds: float) -> None:
        if self.cancelled.wait(seconds):
            raise _Cancelled()

    def _count_retry(self, retry_state: RetryCallState) -> None:
        with self._lock:
            self.retries += 1

    def _attempt(self, offset: int, page_size: int) -> Page:
        if self.cancelled.is_set():
            raise _Cancelled()
        endpoint, pagination = self.endpoint, self.endpoint["pagination"]
        params = {pagination["offset_param"]: offset, pagination["page_size_param"]: page_size}
        url, kwargs = endpoint["url"], {}
        if endpoint["params_in"] == "query" or endpoint["method"] == "GET":
            joiner = "&" if "?" in url else "?"
            url = f"{url}{joiner}{urlencode(params)}"
        elif endpoint["params_in"] == "json":
            kwargs["json"] = params
        else:
            kwargs["data"] = params
        where = f"at offset {offset}"
        try:
            response = self.rt.http.request(
                endpoint["method"],
                url,
                headers=self.headers,
                max_bytes=self.rt.settings.dataset_page_max_bytes,
                **kwargs,
            )
        except EgressError as exc:
            # UnsendableRequest and every other permanent refusal are never retried.
            if exc.transient:
                raise _Transient(f"dataset endpoint {where}: {exc}") from None
            raise StagingFailed(f"dataset endpoint {where}: {exc}") from None
        except (UnicodeError, ValueError) as exc:
            raise StagingFailed(
                f"dataset endpoint {where}: the request could not be built ({type(exc).__name__})"
            ) from None
        status = response.status
        if 300 <= status < 400:
            raise StagingFailed(
                f"dataset endpoint {where} answered HTTP {status}; redirects are not followed"
            )
        if status in RETRIED_STATUSES:
            raise _Transient(
                f"dataset endpoint {where} answered HTTP {status}",
                _retry_after((response.headers or {}).get("Retry-After")),
            )
        if not 200 <= status < 300:
            raise StagingFailed(f"dataset endpoint {where} answered HTTP {status}")
        key = endpoint["records_key"]
        try:
            return page_lines(response.body, key)
        except _Malformed:
            raise StagingFailed(f"dataset endpoint {where} returned malformed JSON") from None
        except _NoRecords:
            raise StagingFailed(f"dataset endpoint {where} returned no {key!r} list") from None


class PageWindow:
    """Pages fetched concurrently and handed out in order.

    At most `concurrency` requests are in flight, and a page is requested only while it is
    within twice that many pages of the next one to be written (the window), below `limit`,
    and not past a short page already seen: a short page ends the dataset, so nothing after
    it is requested once it is known. A slow page therefore does not idle the other
    requests, and at most a window of pages is ever held in memory.
    """

    def __init__(
        self,
        fetcher: PageFetcher,
        *,
        begin_offset: int,
        page_size: int,
        first: int,
        limit: int,
        concurrency: int,
    ) -> None:
        self.fetcher = fetcher
        self.begin_offset = begin_offset
        self.page_size = page_size
        self.concurrency = concurrency
        self.window = 2 * concurrency
        self._end = limit  # pages at or past this index are never requested
        self._next = first  # the next page to request
        self._writing = first  # the next page to hand out
        self._in_flight = 0
        self._closed = False
        self._pending: dict[int, Future[Page | None]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="stage-page"
        )

    def _fill(self) -> None:
        """Request what the window allows (called with the lock held)."""
        while (
            not self._closed
            and self._in_flight < self.concurrency
            and self._next < min(self._end, self._writing + self.window)
        ):
            index, self._next = self._next, self._next + 1
            self._in_flight += 1
            self._pending[index] = self._executor.submit(self._fetch, index)

    def _fetch(self, index: int) -> Page | None:
        try:
            with self._lock:
                if index >= self._end or self._closed:
                    return None
            page = self.fetcher.fetch(self.begin_offset + index * self.page_size, self.page_size)
            if page.records < self.page_size:
                with self._lock:
                    self._end = min(self._end, index + 1)
            return page
        finally:
            with self._lock:
                self._in_flight -= 1
                self._fill()

    def get(self, index: int, on_wait: Callable[[], None], poll: float = 0.25) -> Page:
        """Page `index` (the next in order). `on_wait` runs while waiting; it may raise."""
        with self._lock:
            self._writing = index
            self._fill()
            future = self._pending.pop(index)
        while True:
            try:
                page = future.result(timeout=poll)
            except FutureTimeout:
                on_wait()
                continue
            if page is None:  # only pages past the end are skipped
                raise RuntimeError(f"page {index} was skipped")
            with self._lock:
                self._writing = index + 1
                self._fill()
            return page

    def close(self) -> None:
        """Discard the pages in flight; a page waiting to retry gives up at once."""
        self.fetcher.cancelled.set()
        with self._lock:
            self._closed = True
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- writing shards ----------------------------------------------------------------------------
class _OpenShard:
    def __init__(self, upload: ShardUpload) -> None:
        self.upload = upload
        self.records = 0
        self.bytes = 0
        self.pages = 0  # pages whose last record is in this shard
        self.digest = hashlib.sha256()

    def add(self, data: bytes, records: int) -> None:
        self.upload.write(data)
        self.digest.update(data)
        self.records += records
        self.bytes += len(data)


class _OutOfTime(Exception):
    """The invocation is near its time limit: checkpoint and continue in a new one."""


class _Lost(Exception):
    """Another invocation took over this job's staging (or the job moved on)."""


class Stager:
    """Stages one job from its checkpoint, within one invocation."""

    def __init__(
        self,
        rt: Runtime,
        job: dict[str, Any],
        headers: dict[str, str],
        token: str,
        checkpoint: Checkpoint,
        remaining_ms: Callable[[], int] | None,
    ) -> None:
        self.rt = rt
        self.job = job
        self.job_name = job["job_name"]
        self.endpoint = job["request"]["dataset_endpoint"]
        self.token = token
        self.cp = checkpoint
        self.settings = rt.settings
        self.fetcher = PageFetcher(rt, self.endpoint, headers)
        self.retries_before = checkpoint.retries
        self.remaining_ms = remaining_ms
        margin = self.settings.staging_time_margin_seconds * 1000
        if remaining_ms is not None:
            # Keep a quarter of a short invocation back, so each one still makes progress.
            margin = min(margin, remaining_ms() / 4)
        self.margin_ms = margin
        self.shard: _OpenShard | None = None
        self.position = (checkpoint.next_page, checkpoint.skip)
        self._last_check = time.monotonic()

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        """Stage to the end (then finish) or to the time limit (then continue)."""
        pagination = self.endpoint["pagination"]
        size, max_pages = pagination["page_size"], pagination["max_pages"]
        cap = self.settings.max_pages_cap
        limit = min(max_pages or cap, cap)
        index, skip = self.position
        window = PageWindow(
            self.fetcher,
            begin_offset=pagination["begin_offset"],
            page_size=size,
            first=index,
            limit=limit,
            concurrency=self.settings.staging_concurrency,
        )
        try:
            while True:
                if max_pages and index >= max_pages:
                    break
                if index >= cap:
                    raise StagingFailed(
                        f"dataset has more than {cap} pages, the deployment's cap; "
                        "set dataset_endpoint.pagination.max_pages"
                    )
                self._tick()
                page = window.get(index, self._tick)
                self._write(index, skip, page)
                index, skip = index + 1, 0
                self.position = (index, 0)
                if page.records < size:
                    break
        except _OutOfTime:
            window.close()
            self._continue()
            return
        except BaseException:
            window.close()
            if self.shard is not None:
                self.shard.upload.abort()
            raise
        window.close()
        # The last shard's checkpoint is the move to Starting, after the manifest.
        self._close_shard(checkpoint=False)
        self.finish()

    def _write(self, index: int, skip: int, page: Page) -> None:
        """The page's records from `skip` on, into shards no larger than the shard size.

        A page that fits in the open shard goes in whole, as the one bytes object its lines
        were joined into; only a shard boundary slices it.
        """
        data, ends, limit = page.data, page.ends, self.settings.staging_shard_bytes
        position = skip
        while position < page.records:
            shard = self._open()
            start = ends[position - 1] if position else 0
            # The records whose lines end within the shard's room.
            stop = bisect_right(ends, start + limit - shard.bytes, lo=position)
            if stop == position:
                if shard.records:
                    self.position = (index, position)
                    self._close_shard()
                    continue
                stop = position + 1  # one record larger than a shard
            end = ends[stop - 1]
            shard.add(data if end - start == len(data) else data[start:end], stop - position)
            position = stop
        if page.records:
            self._open().pages += 1

    def _open(self) -> _OpenShard:
        if self.shard is None:
            if len(self.cp.shards) >= MAX_SHARDS:
                raise StagingFailed(
                    f"dataset needs more than {MAX_SHARDS} shards of "
                    f"{self.settings.staging_shard_bytes} bytes"
                )
            key = shard_key(self.job_name, len(self.cp.shards))
            self.shard = _OpenShard(self.rt.storage.start_shard(key, CONTENT_TYPE))
        return self.shard

    # -- checkpoints ---------------------------------------------------------------------
    def _progress(self) -> dict[str, int]:
        open_records = self.shard.records if self.shard else 0
        open_pages = self.shard.pages if self.shard else 0
        return {
            "staged_records": self.cp.records + open_records,
            "staged_pages": self.cp.pages + open_pages,
        }

    def _close_shard(self, *, checkpoint: bool = True) -> None:
        """Complete the open shard (if it holds records) and checkpoint after it."""
        shard, self.shard = self.shard, None
        if shard is not None and shard.records:
            key, digest = shard.upload.key, shard.digest.hexdigest()
            try:
                shard.upload.complete()
            except BaseException as exc:
                shard.upload.abort()
                if not isinstance(exc, ShardExists):
                    raise
                # Written by an invocation that stopped before its checkpoint: keep it if it
                # holds exactly these records, and never overwrite it.
                if self.rt.storage.sha256(key) != digest:
                    raise StagingFailed(
                        f"shard {key.rsplit('/', 1)[1]} was already written with other "
                        "records; the dataset endpoint did not return the same pages again"
                    ) from None
                logger.info("shard already written; kept", extra={"job_name": self.job_name})
            self.cp.shards.append(
                {"key": key, "records": shard.records, "bytes": shard.bytes, "sha256": digest}
            )
            self.cp.records += shard.records
            self.cp.bytes += shard.bytes
            self.cp.pages += shard.pages
        elif shard is not None:
            self.cp.pages += shard.pages  # e.g. an empty last page
            shard.upload.abort()
        self.cp.next_page, self.cp.skip = self.position
        if checkpoint:
            self._checkpoint()

    def _checkpoint(self) -> None:
        self.cp.retries = self.retries_before + self.fetcher.retries
        item = self.rt.store.checkpoint_staging(
            self.job_name, self.token, self.cp.to_item(), self._progress()
        )
        self._after_read(item)

    def _after_read(self, item: dict[str, Any] | None) -> None:
        self._last_check = time.monotonic()
        if item is None:
            raise _Lost()
        if item.get("stop_requested"):
            raise StagingStopped()

    def _tick(self) -> None:
        """Between pages and while waiting: the time limit, and now and then a stop check."""
        if self.remaining_ms is not None and self.remaining_ms() < self.margin_ms:
            raise _OutOfTime()
        if time.monotonic() - self._last_check >= self.settings.staging_stop_check_seconds:
            item = self.rt.store.staging_progress(self.job_name, self.token, self._progress())
            self._after_read(item)

    # -- the end of an invocation ----------------------------------------------------------
    def _continue(self) -> None:
        """Checkpoint and queue the next invocation of the chain."""
        self._close_shard()
        number = self.cp.continuations + 1
        if number > self.settings.staging_max_continuations:
            raise StagingFailed(
                f"staging needed more than {self.settings.staging_max_continuations} "
                "continuations (StagingMaxContinuations); "
                f"{self.cp.records} records were staged"
            )
        self.cp.continuations = number
        self._checkpoint()
        send_continuation(self.rt, self.job_name, number)
        logger.info(
            "staging continues in a new invocation",
            extra={"job_name": self.job_name, "continuation": number, **self._progress()},
        )

    def finish(self) -> None:
        """The manifest (last), then the training job."""
        cp = self.cp
        cp.retries = self.retries_before + self.fetcher.retries
        if cp.records == 0:
            raise StagingFailed("dataset endpoint returned no records")
        self.rt.storage.put_json(
            manifest_key(self.job_name),
            {
                "job_name": self.job_name,
                "source_url": redact_url(self.endpoint["url"]),
                "method": self.endpoint["method"],
                "format": CONTENT_TYPE,
                "records": cp.records,
                "pages": cp.pages,
                "bytes": cp.bytes,
                "retries": cp.retries,
                "continuations": cp.continuations,
                "shards": cp.shards,
                "staged_at": timefmt.to_seed(timefmt.now()),
            },
        )
        logger.info(
            "dataset staged",
            extra={
                "job_name": self.job_name,
                "records": cp.records,
                "pages": cp.pages,
                "shards": len(cp.shards),
                "retries": cp.retries,
                "continuations": cp.continuations,
            },
        )
        metrics.staged(
            started_at=self.job.get("created_at"),
            records=cp.records,
            size=cp.bytes,
            retries=cp.retries,
        )
        started = self.rt.store.mark_starting(
            self.job_name, staging={**self.cp.to_item(), "owner": self.token}, owner=self.token
        )
        if started is None:
            current = self.rt.store.get(self.job_name) or {}
            if current.get("secondary_status") == "Staging" and current.get("stop_requested"):
                endings.abandon(self.rt, self.job_name, "Stopped")  # a stop after the last page
            return  # or another invocation took over
        _start_training(self.rt, started)


def send_continuation(rt: Runtime, job_name: str, number: int) -> None:
    """A new StageQueue message (not a redelivery, so it has its own receive count)."""
    rt.queues.send(rt.settings.stage_queue_url, {"job_name": job_name, "continuation": number})


# -- the job -----------------------------------------------------------------------------------
def stage_job(
    rt: Runtime,
    job_name: str,
    *,
    final_attempt: bool = True,
    continuation: int = 0,
    remaining_ms: Callable[[], int] | None = None,
) -> None:
    """Stage one job, or the part of it that fits in this invocation.

    Expected failures end the job; unexpected ones are retried by SQS (the next attempt
    resumes from the checkpoint), and on the final attempt they too end the job, so none is
    left staging forever. `remaining_ms` is the Lambda context's
    get_remaining_time_in_millis; without it staging never continues in a new invocation.
    """
    try:
        _stage(rt, job_name, continuation, remaining_ms)
    except Exception:
        if not final_attempt:
            raise
        logger.exception("staging failed unexpectedly", extra={"job_name": job_name})
        job = rt.store.get(job_name)
        if job and not job.get("sagemaker_job") and not job.get("batch_job_id"):
            # once SageMaker or Batch has it, their events rule
            endings.abandon(rt, job_name, "Failed", "internal error while staging the dataset")


def _stage(
    rt: Runtime,
    job_name: str,
    continuation: int,
    remaining_ms: Callable[[], int] | None,
) -> None:
    job = rt.store.get(job_name)
    for_job(job_name, (job or {}).get("owner"))
    if job is None:
        logger.warning("staging message for an unknown job", extra={"job_name": job_name})
        return
    if (
        job.get("sagemaker_job")
        or job.get("batch_job_id")
        or job["status"] in ("Completed", "Failed", "Stopped")
    ):
        return  # a repeated message for a job that has moved on
    if job.get("stop_requested"):
        endings.abandon(rt, job_name, "Stopped")
        return
    if job.get("secondary_status") == "Staging":
        token = uuid.uuid4().hex
        claimed = _claim(rt, job, token, continuation)
        if claimed is None:
            return
        headers = rt.secrets.open(job_name, job["secrets"]).get("dataset_headers", {})
        stager = Stager(
            rt,
            claimed,
            headers,
            token,
            Checkpoint.from_item(claimed.get("staging")),
            remaining_ms,
        )
        try:
            bad = unsendable_header(headers)
            if bad:
                raise StagingFailed(
                    f"dataset_endpoint.headers: header {bad} cannot be sent over HTTP"
                )
            stager.run()
        except StagingStopped:
            endings.abandon(rt, job_name, "Stopped")
        except StagingFailed as exc:
            endings.abandon(rt, job_name, "Failed", f"Staging failed: {exc}")
        except _Lost:
            logger.info("another invocation took over staging", extra={"job_name": job_name})
        return
    if job.get("secondary_status") == "Queued":
        scheduling.resume_waiting(rt, job)  # it waited for SageMaker capacity
        return
    _start_training(rt, job)


def _claim(
    rt: Runtime, job: dict[str, Any], token: str, continuation: int
) -> dict[str, Any] | None:
    """Own the job's staging for this message, or None if the message is stale."""
    job_name = job["job_name"]
    for _ in range(2):
        state = job.get("staging")
        current = Checkpoint.from_item(state).continuations if state else 0
        if continuation == current - 1:
            # The message before the last continuation, delivered again: its invocation may
            # have stopped before it queued the continuation, so queue it (again).
            send_continuation(rt, job_name, current)
            return None
        if continuation != current:
            logger.info(
                "stale staging message ignored",
                extra={"job_name": job_name, "continuation": continuation},
            )
            return None
        initial = None if state else Checkpoint().to_item()
        claimed = rt.store.claim_staging(job_name, token, continuation, initial)
        if claimed is not None:
            return claimed
        job = rt.store.get(job_name) or {}
        if job.get("secondary_status") != "Staging":
            return None
    return None


def _start_training(rt: Runtime, job: dict[str, Any]) -> None:
    scheduling.start_training(rt, job)
