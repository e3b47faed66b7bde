"""Page tokens: opaque, tamper-proof, and bound to the caller and the query.

A page token is what a paged route hands out (`X-Next-Token`) and takes back (`next_token`).
Its payload (the position in the listing: a DynamoDB key, a log stream's token) is sealed
with KMS authenticated encryption under the stack's key (`KMS_KEY_ID`), with the owner and
the query as the encryption context. So a token:

- reveals nothing: neither the tenant nor the position can be read from it;
- cannot be forged or altered: any change fails KMS's authentication;
- is valid only for the owner and the query it was issued for: the same token sent by
  another tenant, or with another filter, does not decrypt.

Every way a token can fail to open is the same client error, raised as BadRequest
`next_token: is not a valid page token` (400). Faults of KMS itself (throttling, an
unreachable endpoint) are not the client's and propagate.

    token = pagetokens.seal({"t": position}, owner=owner, query={"status": status})
    position = pagetokens.unseal(token, owner=owner, query={"status": status})["t"]

`query` holds whatever the next page must agree with (a filter, a job name); its values are
JSON. No import beyond the standard library and boto3: nothing is added to a cold start.
"""

import base64
import binascii
import json
from typing import Any

from botocore.exceptions import ClientError

from aifactory import aws
from aifactory.errors import BadRequest
from aifactory.log import logger
from aifactory.settings import get_settings

INVALID = "next_token: is not a valid page token"
# KMS ciphertext of a payload of up to MAX_PAYLOAD_BYTES, base64url without padding, stays
# well under the routes' 4096-character bound on next_token.
MAX_PAYLOAD_BYTES = 2048
MAX_TOKEN_CHARS = 4096
# Binds a token to its purpose too, so no other KMS ciphertext of the stack opens as one.
_PURPOSE = "aifactory-page-token-v1"
# What KMS answers for a ciphertext that is not one of this key's under this context. A
# forged blob may also name a key that does not exist or that the function may not use
# (NotFound, AccessDenied); those are logged, so a real permission fault stays visible.
_NOT_OURS = frozenset(
    {
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "ValidationException",
        "NotFoundException",
        "AccessDeniedException",
    }
)


def _context(owner: str, query: dict[str, Any]) -> dict[str, str]:
    return {
        "purpose": _PURPOSE,
        "owner": owner,
        "query": json.dumps(query, sort_keys=True, separators=(",", ":")),
    }


def seal(payload: dict[str, Any], *, owner: str, query: dict[str, Any]) -> str:
    """An opaque token carrying `payload`, valid only for `owner` and `query`."""
    plaintext = json.dumps(payload, separators=(",", ":")).encode()
    if len(plaintext) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"a page token's payload must be at most {MAX_PAYLOAD_BYTES} bytes")
    blob = aws.client("kms").encrypt(
        KeyId=get_settings().kms_key_id,
        Plaintext=plaintext,
        EncryptionContext=_context(owner, query),
    )["CiphertextBlob"]
    return base64.urlsafe_b64encode(bytes(blob)).rstrip(b"=").decode("ascii")


def unseal(token: str, *, owner: str, query: dict[str, Any]) -> dict[str, Any]:
    """The payload `seal` put in the token; BadRequest (400) for any token that is not one
    this stack issued for this owner and this query."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise BadRequest(INVALID)
    try:
        text = token.encode("ascii")
        blob = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (UnicodeError, binascii.Error, ValueError):
        raise BadRequest(INVALID) from None
    if not blob or base64.urlsafe_b64encode(blob).rstrip(b"=") != text:
        raise BadRequest(INVALID)  # only the one spelling seal() writes
    try:
        plaintext = aws.client("kms").decrypt(
            KeyId=get_settings().kms_key_id,
            CiphertextBlob=blob,
            EncryptionContext=_context(owner, query),
        )["Plaintext"]
    except ClientError as exc:
        code = aws.error_code(exc)
        if code in _NOT_OURS:
            logger.info("page token refused", extra={"reason": code})
            raise BadRequest(INVALID) from None
        raise
    try:
        payload = json.loads(plaintext)
    except ValueError:
        raise BadRequest(INVALID) from None
    if not isinstance(payload, dict):
        raise BadRequest(INVALID)
    return payload
