"""A stand-in for the context object Lambda passes to a handler."""

import threading
import time
import uuid
from dataclasses import dataclass, field

from aifactory_local.provision import ACCOUNT_ID, REGION

# Set while the local Factory stops: running invocations see no time left, so staging
# checkpoints and continues in a new invocation (after the restart), as it does at its timeout.
SHUTTING_DOWN = threading.Event()


@dataclass
class LambdaContext:
    """The attributes and method of Lambda's Python context that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int = 128
    timeout_seconds: float = 3.0
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"{time.strftime('%Y/%m/%d')}/[{self.function_version}]local"

    @property
    def identity(self) -> None:
        return None

    @property
    def client_context(self) -> None:
        return None

    def get_remaining_time_in_millis(self) -> int:
        """Time left before the function's configured timeout (informative only locally)."""
        if SHUTTING_DOWN.is_set():
            return 0
        elapsed = time.monotonic() - self.started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))
