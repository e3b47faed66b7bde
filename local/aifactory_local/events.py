"""A stand-in for the default EventBridge bus and the template's EventBridgeRule events.

An event put on the bus goes to every function whose rule pattern matches it, invoked
asynchronously as EventBridge invokes Lambda: a failed invocation is retried twice (Lambda's
asynchronous MaximumRetryAttempts), then logged as undeliverable. Events for one resource
are delivered in the order they were put.
"""

import logging
import queue
import threading
import zlib
from dataclasses import dataclass
from typing import Any

from aifactory_local.lambdas import LocalFunction

log = logging.getLogger("aifactory_local.events")

_SUPPORTED = {"prefix", "suffix", "exists", "anything-but", "equals-ignore-case"}


def _value_matches(value: Any, matcher: Any, present: bool) -> bool:
    if isinstance(matcher, dict):
        ((op, arg),) = matcher.items()
        if op == "exists":
            return present is bool(arg)
        if not present:
            return False
        if op == "prefix":
            return isinstance(value, str) and value.startswith(arg)
        if op == "suffix":
            return isinstance(value, str) and value.endswith(arg)
        if op == "equals-ignore-case":
            return isinstance(value, str) and value.lower() == str(arg).lower()
        if op == "anything-but":
            excluded = arg if isinstance(arg, list) else [arg]
            return value not in excluded
        raise ValueError(f"unsupported event pattern operator {op!r}")
    return present and value == matcher


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge pattern matching (exact values, prefix, suffix, exists, anything-but,
    equals-ignore-case; nested objects; an array in the event matches if any element does)."""
    for name, expected in pattern.items():
        present = isinstance(event, dict) and name in event
        value = event.get(name) if present else None
        if isinstance(expected, dict):
            if not isinstance(value, dict) or not matches(expected, value):
                return False
            continue
        values = value if isinstance(value, list) else [value]
        if not any(_value_matches(v, m, present) for m in expected for v in values):
            return False
    return True


def check_pattern(pattern: dict[str, Any]) -> None:
    """Fail at start on a pattern this stand-in cannot evaluate."""
    for expected in pattern.values():
        if isinstance(expected, dict):
            check_pattern(expected)
            continue
        for matcher in expected:
            if isinstance(matcher, dict) and not set(matcher) <= _SUPPORTED:
                raise ValueError(f"unsupported event pattern operator in {matcher!r}")


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: dict[str, Any]
    target: LocalFunction
    max_retries: int = 2


class EventBus:
    def __init__(self, rules: list[Rule], workers: int = 4) -> None:
        for rule in rules:
            check_pattern(rule.pattern)
        self.rules = rules
        self._queues: list[queue.Queue[Any]] = [queue.Queue() for _ in range(workers)]
        self._threads: list[threading.Thread] = []
        self.undeliverable: list[dict[str, Any]] = []

    def start(self) -> None:
        for index, work in enumerate(self._queues):
            thread = threading.Thread(
                target=self._deliver, args=(work,), name=f"eventbus-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        for work in self._queues:
            work.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def put(self, event: dict[str, Any]) -> None:
        key = ",".join(event.get("resources") or []) or str(event.get("id"))
        shard = zlib.crc32(key.encode()) % len(self._queues)
        self._queues[shard].put(event)

    def _deliver(self, work: "queue.Queue[Any]") -> None:
        while True:
            event = work.get()
            if event is None:
                return
            for rule in self.rules:
                if matches(rule.pattern, event):
                    self._invoke(rule, event)

    def _invoke(self, rule: Rule, event: dict[str, Any]) -> None:
        for attempt in range(1 + rule.max_retries):
            try:
                rule.target.invoke(event)
                return
            except Exception:
                log.exception(
                    "%s failed on event %s (attempt %d)", rule.target.name, event["id"], attempt + 1
                )
        self.undeliverable.append(event)
        log.error("event %s could not be delivered to %s", event["id"], rule.target.name)
