"""EventBridge schedules: invoke a function with a Scheduled Event every few seconds, as
the template's `Schedule` events do every few minutes in AWS (the reconciler's sweep)."""

import logging
import threading
import uuid
from typing import Any

from aifactory_local.lambdas import LocalFunction
from aifactory_local.provision import ACCOUNT_ID, REGION

log = logging.getLogger("aifactory_local.schedules")


def scheduled_event(rule_name: str) -> dict[str, Any]:
    """EventBridge's Scheduled Event, as a `Schedule` event source delivers it."""
    from datetime import UTC, datetime

    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule_name}"],
        "detail": {},
    }


class ScheduleTimer:
    """Invoke `function` every `interval` seconds until stopped; a failed run is logged."""

    def __init__(self, name: str, function: LocalFunction, interval: float) -> None:
        self.name = name
        self.function = function
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"schedule-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.function.spec.timeout + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.function.invoke(scheduled_event(self.name))
            except Exception:
                log.exception("scheduled run of %s failed", self.function.name)
