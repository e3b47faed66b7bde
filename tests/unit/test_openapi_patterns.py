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
