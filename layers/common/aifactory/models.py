"""Job statuses, and the request models (pydantic, in `request_models`) loaded on first use.

`from aifactory.models import ListJobsRequest` works as before; but a module that needs only
the statuses (the store, the notifier) no longer pays for pydantic, and a handler that names
its model as `models.ListJobsRequest` inside its route imports pydantic with its first
request rather than at cold start.
"""

from typing import TYPE_CHECKING, Any

# Re-exported: the store and the notifier read them from here.
from aifactory.statuses import STATUSES as STATUSES
from aifactory.statuses import TERMINAL_STATUSES as TERMINAL_STATUSES

if TYPE_CHECKING:
    from aifactory.request_models import *  # noqa: F403


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    from aifactory import request_models

    try:
        return getattr(request_models, name)
    except AttributeError:
        raise AttributeError(f"module 'aifactory.models' has no attribute {name!r}") from None
