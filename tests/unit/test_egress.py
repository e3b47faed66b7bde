"""The SSRF policy's address rules, in every spelling a resolver accepts."""

import ipaddress

import pytest

from aifactory.egress import address_allowed, check_url, literal_address, redact_url


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
        ("example.com", None),
    ],
)
def test_literal_addresses_in_every_spelling(host, address):
    found = literal_address(host)
    assert (str(found) if found else None) == address


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:a00:1::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_addresses_are_allowed(address):
    assert address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/", "must be an http or https URL"),
        ("https://", "must name a host"),
        ("https://user:pw@example.com/", "must not carry credentials; send them as headers"),
        ("http://localhost/", "points at a local host name"),
        ("http://api.localhost/", "points at a local host name"),
        ("http://[::1]:8080/", "points at a non-public address (::1)"),
        # numeric, so a resolver may read it as an address, yet no valid one
        ("http://999.0.0.1/", "is not a valid address"),
        ("http://1.2.3.4.5/", "is not a valid address"),
        ("https://example.com/a b", "must not contain whitespace"),
        ("https://example.com/" + "a" * 2100, "must be at most 2048 characters"),
        ("https://api.chappie.app/v1/ml/datasets/fetch", None),
    ],
)
def test_create_time_url_checks(url, problem):
    assert check_url(url, allow_private=False) == problem


def test_relaxed_policy_still_checks_the_shape():
    assert check_url("http://127.0.0.1:3000/x", allow_private=True) is None
    assert check_url("gopher://127.0.0.1/", allow_private=True) == "must be an http or https URL"


def test_redaction_drops_credentials_and_query_values():
    assert redact_url("https://u:p@data.example.com:8443/f?token=abc&page=1") == (
        "https://data.example.com:8443/f?token=REDACTED&page=REDACTED"
    )


def test_redaction_keeps_an_ipv6_host_a_valid_url():
    assert redact_url("http://user:pw@[2001:db8::1]:8080/p?token=x&b=2") == (
        "http://[2001:db8::1]:8080/p?token=REDACTED&b=REDACTED"
    )


def test_redaction_hides_a_query_value_that_contains_equals_signs():
    # A base64 signature ends in "="; none of it may remain
    assert redact_url("https://data.example.com/f?sig=c2VjcmV0==&page=1") == (
        "https://data.example.com/f?sig=REDACTED&page=REDACTED"
    )
