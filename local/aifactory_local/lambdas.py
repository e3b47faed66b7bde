"""The stack's functions as template.yaml defines them, each run from its deployed app.py.

Every concurrent execution of a function gets its own copy of the function's module, as each
Lambda execution environment has its own, so module-level state (the Powertools resolver,
the batch processor) is never shared between two invocations running at the same time.
"""

import importlib.util
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from aifactory_local.lambda_context import LambdaContext
from aifactory_local.template import REPO_ROOT, load_template, resolve

log = logging.getLogger("aifactory_local.lambdas")

_module_ids = itertools.count(1)
_invocation = threading.local()


class InvocationLogFilter(logging.Filter):
    """Stamps log records with the context of the invocation running on their thread.

    Powertools' inject_lambda_context keeps the context in the one shared logger, which is
    right when a process runs one invocation at a time, as Lambda does. Here invocations of
    several functions run at once in one process, so the record gets the fields of its own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context: LambdaContext | None = getattr(_invocation, "context", None)
        if context is not None:
            record.function_name = context.function_name
            record.function_memory_size = context.memory_limit_in_mb
            record.function_arn = context.invoked_function_arn
            record.function_request_id = context.aws_request_id
            record.cold_start = getattr(_invocation, "cold_start", False)
        return True


@dataclass(frozen=True)
class FunctionSpec:
    """One AWS::Serverless::Function of the template."""

    logical_id: str
    code_dir: Path
    handler: str
    timeout: float
    memory: int
    events: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def module_file(self) -> Path:
        return self.code_dir / f"{self.handler.rsplit('.', 1)[0]}.py"

    @property
    def handler_name(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    def events_of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e.get("Properties", {}) for e in self.events.values() if e.get("Type") == kind]


def function_specs(
    template: dict[str, Any] | None = None, timeouts: dict[str, float] | None = None
) -> dict[str, FunctionSpec]:
    """Every function of the template, with Globals applied.

    `timeouts` (function logical id -> seconds) shortens or lengthens a function's Timeout,
    e.g. StageFn to a few seconds so that staging continues in new invocations locally.
    """
    template = template or load_template()
    defaults = template.get("Globals", {}).get("Function", {})
    specs = {}
    for logical_id, res in template["Resources"].items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**defaults, **res.get("Properties", {})}
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=REPO_ROOT / str(props["CodeUri"]),
            handler=str(props.get("Handler", "app.lambda_handler")),
            timeout=float(resolve(props.get("Timeout", 3), template)),
            memory=int(resolve(props.get("MemorySize", 128), template)),
            events=dict(props.get("Events") or {}),
        )
    for name, seconds in (timeouts or {}).items():
        if name not in specs:
            raise ValueError(
                f"--function-timeout: no function {name!r} (functions: {', '.join(sorted(specs))})"
            )
        if not seconds > 0:
            raise ValueError(f"--function-timeout: {name} needs a positive number of seconds")
        specs[name] = replace(specs[name], timeout=float(seconds))
    return specs


def function_environment(template: dict[str, Any] | None = None) -> dict[str, str]:
    """The functions' own Environment.Variables that come from parameters or literals
    (Globals' are read by the Factory itself), resolved with the parameters' defaults."""
    template = template or load_template()
    env: dict[str, str] = {}
    for res in template["Resources"].values():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        variables = (res.get("Properties", {}).get("Environment") or {}).get("Variables") or {}
        for name, value in variables.items():
            value = resolve(value, template)
            if isinstance(value, str | int | float | bool):
                env[name] = str(value)
    return env


def _load_module(spec: FunctionSpec) -> ModuleType:
    name = f"aifactory_local_fn_{spec.logical_id.lower()}_{next(_module_ids)}"
    module_spec = importlib.util.spec_from_file_location(name, spec.module_file)
    if module_spec is None or module_spec.loader is None:
        raise RuntimeError(f"cannot load {spec.module_file}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class LocalFunction:
    """A function with a pool of warm execution environments (module copies)."""

    def __init__(self, spec: FunctionSpec, max_concurrency: int = 8) -> None:
        self.spec = spec
        self.name = spec.logical_id
        self._idle: list[ModuleType] = []
        self._count = 0
        self._max = max_concurrency
        self._cond = threading.Condition()

    def _acquire(self) -> tuple[ModuleType, bool]:
        """An idle environment, or a new one (a cold start); True for a cold start."""
        with self._cond:
            while not self._idle and self._count >= self._max:
                self._cond.wait()
            if self._idle:
                return self._idle.pop(), False
            self._count += 1
        try:
            return _load_module(self.spec), True
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, module: ModuleType) -> None:
        with self._cond:
            self._idle.append(module)
            self._cond.notify()

    def invoke(self, event: Any) -> Any:
        """Run the handler once, synchronously; its exceptions propagate as Lambda errors."""
        module, cold = self._acquire()
        context = LambdaContext(
            function_name=self.name,
            memory_limit_in_mb=self.spec.memory,
            timeout_seconds=self.spec.timeout,
        )
        _invocation.context, _invocation.cold_start = context, cold
        started = time.monotonic()
        try:
            return getattr(module, self.spec.handler_name)(event, context)
        finally:
            _invocation.context = None
            self._release(module)
            took = time.monotonic() - started
            if took > self.spec.timeout:
                # Lambda would have ended it; here it runs on, so say so.
                log.warning(
                    "%s ran %.1f s, past its %.0f s timeout (Lambda would have ended it)",
                    self.name,
                    took,
                    self.spec.timeout,
                )

    def warm_up(self) -> None:
        """Load one environment now, so a broken function fails at start, not on first use."""
        module, _ = self._acquire()
        self._release(module)
