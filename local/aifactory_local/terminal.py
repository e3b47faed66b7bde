"""One readable terminal line per thing that happens to a job, while the Factory runs.

    19:04:12 job created     ml_tagger-20261128-190412-ab12   owner alice, task_def ml_tagger
    19:04:13 staged          ml_tagger-...   200 records in 2 pages
    19:04:13 queued          ml_tagger-...   share alice, priority 0
    19:04:14 dequeued        ml_tagger-...   after 0.4 s; starting training
    19:04:14 training        ml_tagger-...   Downloading
    19:04:20 completed       ml_tagger-...   F1 0.87
    19:04:20 callback        ml_tagger-...   delivered (attempt 1)
    19:05:02 failed          ml_tagger-...   Staging failed: dataset endpoint ... answered HTTP 403

The lines come from what the functions log (job created, dataset staged, job ended, callback
delivered, retrying, undeliverable) and from the training queue's and the training runtime's
state changes. A job's end (completed, failed, stopped) is the line its callback logs when it
is first sent, as the callback tells it: the F1 of the report the callback carries, or the
reason the job failed, wherever it ended (in staging, in the queue, in training). The
terminal never looks for a report itself. Colour is used when the stream is a terminal and
NO_COLOR is not set (https://no-color.org); `--quiet` turns the lines off. Everything also
still goes to the JSON logs under <state dir>/logs/.
"""

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "cyan": "36", "dim": "2"}


def use_colour(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and env.get("TERM") != "dumb"


class Terminal:
    """Prints event lines; thread-safe, one line per call."""

    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.colour = use_colour(self.stream) if colour is None else colour
        self._lock = threading.Lock()

    def _paint(self, text: str, colour: str | None) -> str:
        if not self.colour or colour is None:
            return text
        return f"\033[{_COLOURS[colour]}m{text}\033[0m"

    def line(self, what: str, job_name: str, detail: str = "", colour: str | None = None) -> None:
        stamp = self._paint(time.strftime("%H:%M:%S"), "dim")
        text = f"{stamp} {self._paint(f'{what:<15}', colour)} {job_name}"
        if detail:
            text += f"   {detail}"
        # A closed or broken terminal never stops a job.
        with self._lock, contextlib.suppress(OSError, ValueError):
            print(text, file=self.stream, flush=True)

    # -- from the training runtime -----------------------------------------------------------
    def state_change(self, event: dict[str, Any]) -> None:
        detail = event.get("detail") or {}
        if event.get("source") == "aws.batch":
            self._queue_change(detail)
            return
        # A training job that Batch started has a name of Batch's; show the Factory's job.
        tags = detail.get("Tags")
        name = str(
            (tags if isinstance(tags, dict) else {}).get("aifactory:job")
            or detail.get("TrainingJobName", "?")
        )
        status, secondary = detail.get("TrainingJobStatus"), detail.get("SecondaryStatus")
        if status in ("InProgress", "Stopping"):
            self.line("training", name, str(secondary), "blue")
        # The end is the callback's "job ended" line (FunctionLogLines).

    def _queue_change(self, detail: dict[str, Any]) -> None:
        """The training queue: a line when a job starts to wait, and when it leaves."""
        name = str(detail.get("jobName", "?"))
        status = detail.get("status")
        if status == "RUNNABLE":
            reason = str(detail.get("statusReason") or "")
            if reason.startswith("CAPACITY:"):
                self.line("queued", name, "SageMaker has no capacity; waiting", "yellow")
                return
            share, priority = detail.get("shareIdentifier"), detail.get("schedulingPriority")
            self.line("queued", name, f"share {share}, priority {priority}", "cyan")
        elif status == "SCHEDULED":
            created, scheduled = detail.get("createdAt"), detail.get("scheduledAt")
            waited = ""
            if isinstance(created, int) and isinstance(scheduled, int):
                waited = f"after {max(0, scheduled - created) / 1000:.1f} s; "
            self.line("dequeued", name, f"{waited}starting training", "cyan")
        # A service job that fails in the queue ends the job: the callback's "job ended" line.


class FunctionLogLines(logging.Handler):
    """Turns the functions' log records about jobs into terminal lines."""

    def __init__(self, terminal: Terminal, owners: dict[str, str] | None = None) -> None:
        """`owners` names the owners (API key ids) by their key names."""
        super().__init__(logging.INFO)
        self.terminal = terminal
        self.owners = dict(owners or {})

    def emit(self, record: logging.LogRecord) -> None:
        # A terminal line must never fail an invocation.
        with contextlib.suppress(Exception):
            self._line(record)

    def _line(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        job = str(getattr(record, "job_name", "") or "")
        say = self.terminal.line
        if message == "job created":
            say("job created", job, _created_detail(record, job, self.owners), "cyan")
        elif message == "dataset staged":
            records, pages = getattr(record, "records", "?"), getattr(record, "pages", "?")
            retries = int(getattr(record, "retries", 0) or 0)
            more = f", {retries} retries" if retries else ""
            say("staged", job, f"{records} records in {pages} pages{more}", "cyan")
        elif message == "staging continues in a new invocation":
            records = getattr(record, "staged_records", "?")
            say("staging", job, f"continues in a new invocation ({records} records so far)")
        elif message == "job ended":
            _ended(say, record, job)
        elif message == "callback delivered":
            say("callback", job, f"delivered (attempt {getattr(record, 'attempt', 1)})", "green")
        elif message == "callback failed; will retry":
            attempt = getattr(record, "attempt", 1)
            why = getattr(record, "error", None) or "no reason given"
            delay = getattr(record, "delay", None)
            detail = f"retrying (attempt {attempt} failed: {why})"
            if delay is not None:
                detail += f", next in {delay} s"
            say("callback", job, detail, "yellow")
        elif message == "callback undeliverable":
            say("callback", job, f"failed: {getattr(record, 'error', 'gave up')}", "red")
        elif message in ("failed a stuck staging job", "staging failed unexpectedly"):
            say("staging", job, message, "red")
        elif message == "stop requested":
            say("stop", job, "requested by the client", "yellow")


# A job's end: the word and colour of its line.
_ENDS = {"Completed": ("completed", "green"), "Failed": ("failed", "red")}


def _ended(say: Any, record: logging.LogRecord, job: str) -> None:
    """A job's end as its callback tells it: the report's F1, or the reason it failed."""
    status = str(getattr(record, "status", "?"))
    what, colour = _ENDS.get(status, (status.lower(), "yellow"))
    reason = getattr(record, "failure_reason", None)
    if status == "Completed":
        f1 = getattr(record, "f1", None)
        detail = f"F1 {f1}" if f1 else "no evaluation report"
        if f1 and getattr(record, "report_source", None):
            detail += " (from SageMaker's final metrics)"
        if reason:
            detail += f"; {reason}"
    else:
        detail = str(reason or "")
    say(what, job, detail, colour)


def _created_detail(record: logging.LogRecord, job_name: str, owners: dict[str, str]) -> str:
    task_def = getattr(record, "task_def", "?")
    owner = "?"
    with contextlib.suppress(Exception):  # the owner is a nicety
        from aifactory import runtime

        item = runtime.get_runtime().store.get(job_name) or {}
        owner = str(item.get("owner", "?"))
        owner = owners.get(owner, owner)
    return f"owner {owner}, task_def {task_def}"
