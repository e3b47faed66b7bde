"""schemathesis hooks for the API run (tests/local/test_schemathesis.py).

Two things in a generated request cannot be valid by their schema alone, so they are set
the way a client sets them before the request is sent:

- the dataset and callback URLs point at this run's servers on 127.0.0.1: a generated public
  host name would be resolved and fetched by staging, and no test reaches past 127.0.0.1
  (that any URL the schema's pattern allows is accepted is a property test of its own);
- `next_token` is dropped from a positive list request: a page token is opaque, and only the
  one the Factory issued is a valid token (arbitrary tokens are a property test of their own).
"""

import os
from typing import Any

import schemathesis


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    for field, variable in (
        ("dataset_endpoint", "AIFACTORY_FUZZ_DATASET_URL"),
        ("callback_url", "AIFACTORY_FUZZ_CALLBACK_URL"),
    ):
        target = body.get(field)
        if isinstance(target, dict) and isinstance(target.get("url"), str):
            target["url"] = os.environ[variable]
    body.pop("next_token", None)  # only the list route takes one
    return body
