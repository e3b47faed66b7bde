"""What SageMaker does with a training container's output, done against the emulated account.

Each run of a trainer gets a log stream `<job>/algo-1-<epoch seconds>` in the log group
`/aws/sagemaker/TrainingJobs` (a spot restart starts a new one, as a new instance does), and
every line it prints goes there. Each line is also matched against the job's own
`MetricDefinitions`: the first group of each match is published as a CloudWatch metric of
that name, in the namespace `/aws/sagemaker/TrainingJobs` with the dimension
`Host=<job>/algo-1`. The Factory's handlers then read both with the same calls as deployed.

Lines are shipped from a thread of their own every SHIP_SECONDS (and at the end of the run),
so a client following the log sees a line within a fraction of a second.
"""

import contextlib
import logging
import re
import threading
import time
from typing import Any

log = logging.getLogger("aifactory_local.cloudwatch")

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
NAMESPACE = "/aws/sagemaker/TrainingJobs"
SHIP_SECONDS = 0.25
# PutLogEvents takes up to 10,000 events (1 MB) a call, PutMetricData 1,000 values.
MAX_EVENTS_PER_PUT = 1000
MAX_METRICS_PER_PUT = 1000
# CloudWatch Logs keeps at most 256 KB of one event.
MAX_MESSAGE_BYTES = 256 * 1024 - 26


def compile_definitions(definitions: list[dict[str, Any]]) -> list[tuple[str, re.Pattern[str]]]:
    """The job's MetricDefinitions as (name, pattern); ValueError names a bad expression."""
    compiled = []
    for definition in definitions or []:
        name, regex = definition.get("Name"), definition.get("Regex")
        if not isinstance(name, str) or not isinstance(regex, str):
            raise ValueError("MetricDefinitions: each needs a Name and a Regex")
        try:
            compiled.append((name, re.compile(regex)))
        except re.error as exc:
            raise ValueError(f"MetricDefinitions: {name}: invalid Regex ({exc})") from None
    return compiled


class TrainingOutput:
    """One trainer run's output, on its way to CloudWatch Logs and metrics."""

    def __init__(
        self,
        logs: Any,
        cloudwatch: Any,
        job_name: str,
        definitions: list[dict[str, Any]],
        started: float | None = None,
    ) -> None:
        self.logs = logs
        self.cloudwatch = cloudwatch
        self.job_name = job_name
        self.host = f"{job_name}/algo-1"
        self.stream = f"{job_name}/algo-1-{int(started if started is not None else time.time())}"
        self.definitions = compile_definitions(definitions)
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._metrics: list[dict[str, Any]] = []
        self._closed = threading.Event()
        self._last_millis = 0
        self._thread = threading.Thread(target=self._run, name=f"logs-{job_name}", daemon=True)

    def start(self) -> "TrainingOutput":
        self._create_stream()
        self._thread.start()
        return self

    def _create_stream(self) -> None:
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=self.stream)

    def line(self, text: str, moment: float | None = None) -> None:
        """One line the trainer printed (without its newline)."""
        millis = int((time.time() if moment is None else moment) * 1000)
        with self._lock:
            # A stream's events are in time order, ties kept in the order printed.
            millis = max(millis, self._last_millis)
            self._last_millis = millis
            message = text.encode("utf-8")[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")
            self._events.append({"timestamp": millis, "message": message or " "})
            for name, pattern in self.definitions:
                match = pattern.search(text)
                if match is None or not match.groups():
                    continue
                try:
                    value = float(match.group(1))
                except (TypeError, ValueError):
                    continue
                self._metrics.append(
                    {
                        "MetricName": name,
                        "Dimensions": [{"Name": "Host", "Value": self.host}],
                        "Timestamp": millis / 1000,
                        "Value": value,
                        "StorageResolution": 1,
                    }
                )

    def _run(self) -> None:
        while not self._closed.wait(SHIP_SECONDS):
            self.ship()

    def ship(self) -> None:
        """Send what has been printed since the last call."""
        with self._lock:
            events, self._events = self._events, []
            metrics, self._metrics = self._metrics, []
        try:
            for start in range(0, len(events), MAX_EVENTS_PER_PUT):
                self.logs.put_log_events(
                    logGroupName=LOG_GROUP,
                    logStreamName=self.stream,
                    logEvents=events[start : start + MAX_EVENTS_PER_PUT],
                )
            for start in range(0, len(metrics), MAX_METRICS_PER_PUT):
                self.cloudwatch.put_metric_data(
                    Namespace=NAMESPACE, MetricData=metrics[start : start + MAX_METRICS_PER_PUT]
                )
        except Exception:  # the trainer goes on; its training.log keeps every line
            log.exception("could not ship the output of %s to CloudWatch", self.job_name)

    def close(self) -> None:
        """Ship the rest, and stop."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.ship()
