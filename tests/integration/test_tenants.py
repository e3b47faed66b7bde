"""Jobs belong to tenants, not keys: every key tagged with a tenant sees the tenant's jobs, a
key without a tag is its own tenant, and the logs name the tenant, never the key."""

import uuid

import boto3
import pytest

from aifactory import tenants
from tests.integration.flow import Dataset, call, seed_request


@pytest.fixture
def gateway(factory_env):
    client = boto3.client("apigateway")
    created: list[str] = []

    def key(tenant: str | None = None) -> str:
        tags = {tenants.TENANT_TAG: tenant} if tenant else {}
        made = client.create_api_key(name=f"k-{uuid.uuid4().hex[:6]}", enabled=True, tags=tags)
        created.append(made["id"])
        return str(made["id"])

    yield key
    for key_id in created:
        client.delete_api_key(apiKey=key_id)


def _create(fns, httpserver, callbacks, key_id):
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "t"}]))
    status, answer, _ = call(
        fns,
        "create_training_job",
        seed_request(httpserver.url_for("/data"), callbacks.url),
        key_id,
    )
    assert status == 200, answer
    return answer["job_name"]


def _listed(fns, key_id):
    status, jobs, _ = call(fns, "check_trained_job", {}, key_id)
    assert status == 200, jobs
    return {job["TrainingJobName"] for job in jobs}


def test_keys_of_one_tenant_share_its_jobs_and_other_tenants_see_none(
    fns, factory_env, gateway, httpserver, callbacks
):
    # Given two keys tagged with tenant acme, one with tenant globex, and one untagged key
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    first, second = gateway(tenant), gateway(tenant)
    other, untagged = gateway(f"globex-{uuid.uuid4().hex[:6]}"), gateway()
    # When the first key creates a job
    job = _create(fns, httpserver, callbacks, first)
    # Then the second key of the same tenant lists it and reads its status
    assert job in _listed(fns, second)
    status, answer, _ = call(fns, "check_training_status", {"job_name": job}, second)
    assert (status, answer["job_name"]) == (200, job)
    # but another tenant and an untagged key see nothing of it, not even that it exists
    for stranger in (other, untagged):
        assert job not in _listed(fns, stranger)
        status, answer, _ = call(fns, "check_training_status", {"job_name": job}, stranger)
        assert status == 404, answer
        status, answer, _ = call(fns, "stop_training_job", {"job_name": job}, stranger)
        assert status == 404, answer


def test_a_key_without_a_tenant_tag_is_its_own_tenant(
    fns, factory_env, gateway, httpserver, callbacks
):
    # Given an untagged key (as every key was before tenants) and a key the gateway knows
    # only by id (e.g. one being deleted)
    untagged = gateway()
    # When each creates a job
    job = _create(fns, httpserver, callbacks, untagged)
    legacy = _create(fns, httpserver, callbacks, "legacykeyid1")
    # Then each lists its own, as before
    assert job in _listed(fns, untagged)
    assert legacy in _listed(fns, "legacykeyid1")
    assert legacy not in _listed(fns, untagged)


def test_log_lines_of_a_request_name_the_tenant_and_the_job_never_the_key(
    fns, factory_env, gateway, httpserver, callbacks, factory_logs
):
    # Given a key of tenant acme
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    key_id = gateway(tenant)
    # When it creates a job
    job = _create(fns, httpserver, callbacks, key_id)
    # Then the job's log lines carry the job name and the tenant, and the key id nowhere
    created = [r for r in factory_logs.records if r["message"] == "job created"]
    assert [(r["job_name"], r["tenant"]) for r in created] == [(job, tenant)]
    assert key_id not in factory_logs.text
