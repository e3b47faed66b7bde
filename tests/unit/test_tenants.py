"""A key's tenant: its aifactory:tenant tag, looked up once per few minutes per container; a
key without the tag (or unknown to API Gateway) is its own tenant; other faults are not
hidden."""

from typing import Any

import pytest
from botocore.exceptions import ClientError

from aifactory import aws, tenants


class FakeApiGateway:
    """GetApiKey over a dict of key id -> tags, counting the calls."""

    def __init__(self, keys: dict[str, dict[str, str]], error: str | None = None) -> None:
        self.keys = keys
        self.error = error
        self.calls: list[str] = []

    def get_api_key(self, apiKey: str, includeValue: bool) -> dict[str, Any]:  # noqa: N803
        assert includeValue is False  # the key's value is never fetched
        self.calls.append(apiKey)
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "x"}}, "GetApiKey")
        if apiKey not in self.keys:
            raise ClientError({"Error": {"Code": "NotFoundException", "Message": "x"}}, "GetApiKey")
        return {"id": apiKey, "tags": self.keys[apiKey]}


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(keys: dict[str, dict[str, str]], error: str | None = None) -> FakeApiGateway:
        fake = FakeApiGateway(keys, error)
        monkeypatch.setattr(aws, "client", lambda service: fake)
        return fake

    tenants.forget()
    yield install
    tenants.forget()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(tenants.time, "monotonic", lambda: now[0])
    return now


def test_a_tagged_key_belongs_to_its_tenant_and_an_untagged_one_to_itself(gateway):
    gateway({"k1": {tenants.TENANT_TAG: "acme"}, "k2": {"other": "x"}})
    assert tenants.tenant_of("k1") == "acme"
    assert tenants.tenant_of("k2") == "k2"
    assert tenants.tenant_of("gone") == "gone"  # unknown to API Gateway: only itself


def test_the_tenant_is_cached_for_a_few_minutes_then_read_again(gateway, clock):
    # Given a tagged key looked up once
    fake = gateway({"k1": {tenants.TENANT_TAG: "acme"}})
    assert tenants.tenant_of("k1") == "acme"
    # When it is asked again within the cache time, Then API Gateway is not asked again
    clock[0] += tenants.CACHE_SECONDS - 1
    assert tenants.tenant_of("k1") == "acme"
    assert fake.calls == ["k1"]
    # and after it, the tag is read afresh
    clock[0] += 2
    fake.keys["k1"] = {tenants.TENANT_TAG: "acme-2"}
    assert tenants.tenant_of("k1") == "acme-2"
    assert fake.calls == ["k1", "k1"]


def test_a_fault_reading_the_key_is_raised_not_taken_for_an_untagged_key(gateway):
    # Given API Gateway refusing the read (a missing permission, throttling)
    gateway({"k1": {tenants.TENANT_TAG: "acme"}}, error="AccessDeniedException")
    # Then the caller is not silently made its own tenant (it would lose its jobs)
    with pytest.raises(ClientError):
        tenants.tenant_of("k1")
