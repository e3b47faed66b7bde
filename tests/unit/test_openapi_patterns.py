"""The patterns openapi.yaml states describe requests the API accepts: whatever a pattern
allows, validation allows too (schemathesis relies on it to build valid requests)."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from aifactory.egress import check_url
from aifactory_local.openapi import URL_PATTERN

EXAMPLES = settings(max_examples=int(os.environ.get("AIFACTORY_FUZZ_EXAMPLES", "1000")))


@EXAMPLES
@given(st.from_regex(URL_PATTERN, fullmatch=True))
def test_every_url_the_pattern_allows_passes_the_public_url_policy(url: str) -> None:
    # No resolution happens at create: the policy reads the URL alone
    assert check_url(url, allow_private=False) is None, url


def test_the_pattern_refuses_what_the_policy_refuses() -> None:
    import re

    for url in (
        "http://localhost/x",
        "http://a.localhost:80/x",
        "https://svc.internal/",
        "ftp://example.com/",
        "http://user:pw@example.com/",
        "http://example.com:0/",
        "http://example.com:65536/",
        "http://10.0.0.1/",
        "http://example.com/a b",
    ):
        assert re.fullmatch(URL_PATTERN, url) is None, url


def test_the_signing_secret_pattern_allows_exactly_the_secrets_validation_allows() -> None:
    import base64
    import re

    from aifactory.request_models import CallbackUrl, validate
    from aifactory_local.openapi import build_spec

    schema = build_spec()["components"]["schemas"]["CallbackUrl"]["properties"]
    pattern = schema["signing_secret"]["anyOf"][0]["pattern"]
    for size in range(1, 80):
        secret = "whsec_" + base64.b64encode(bytes(range(size))).decode()
        body = {"url": "https://example.com/cb", "signing_secret": secret}
        try:
            validate(CallbackUrl, body)
            accepted = True
        except Exception:
            accepted = False
        assert bool(re.fullmatch(pattern, secret)) == accepted, size
