"""Which tenant an API key belongs to: the owner of every job the key creates or sees.

The tenant is the API key's `aifactory:tenant` tag, read with API Gateway's GetApiKey (tags
come with the key) and kept for a few minutes per container. A key without the tag is its own
tenant, so jobs created before keys had tenants keep their owner. Several keys may carry one
tenant at once: that is how a client's key is rotated without losing its jobs. Revoking a key
(deleting or disabling it) takes effect at the gateway at once, whatever is cached here.
"""

import threading
import time

from botocore.exceptions import ClientError

from aifactory import aws

TENANT_TAG = "aifactory:tenant"
# Marks the local Factory's own keys in its emulated API Gateway (never on a deployed key):
# aifactory-admin lists them but does not revoke them, since the Factory accepts them anyway.
LOCAL_KEY_TAG = "aifactory:local-key"
CACHE_SECONDS = 300.0

_cache: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


def tenant_of(key_id: str) -> str:
    """The tenant of the API key `key_id` (its own id when it has no tenant tag)."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    try:
        key = aws.client("apigateway").get_api_key(apiKey=key_id, includeValue=False)
        tenant = str((key.get("tags") or {}).get(TENANT_TAG) or key_id)
    except ClientError as exc:
        # The gateway has just accepted this key: an id API Gateway no longer knows is a key
        # being deleted, and sees only what it owns itself.
        if aws.error_code(exc) != "NotFoundException":
            raise
        tenant = key_id
    with _lock:
        _cache[key_id] = (now + CACHE_SECONDS, tenant)
    return tenant


def forget() -> None:
    """Drop the cached tenants (tests and the local Factory)."""
    with _lock:
        _cache.clear()
