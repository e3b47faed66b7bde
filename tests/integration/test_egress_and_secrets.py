"""The URL policy a deployed stack enforces, and client secrets kept out of logs and errors."""

import json
import socket

import pytest

from tests.integration.flow import Dataset, call, notify, seed_request, stage_pending

PUBLIC_CALLBACK = "https://callbacks.example.com/hook"


@pytest.fixture
def strict(settings_override):
    settings_override(ALLOW_PRIVATE_URLS="false")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/data",
        "http://2130706433/data",
        "http://0177.0.0.1/data",
        "http://0x7f.0.0.1/data",
        "http://127.1/data",
        "http://[::1]/data",
        "http://[::ffff:127.0.0.1]/data",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/data",
        "http://192.168.0.1/data",
        "http://0.0.0.0/data",
        "http://224.0.0.1/data",
        "http://[fe80::1]/data",
        "http://localhost:8080/data",
    ],
)
def test_non_public_dataset_urls_are_refused_at_create(fns, strict, url):
    body = seed_request(url, PUBLIC_CALLBACK)
    status, answer, _ = call(fns, "create_training_job", body)
    assert status == 400
    assert answer["message"].startswith("dataset_endpoint.url: points at")


def test_non_public_callback_url_is_refused_at_create(fns, strict):
    body = seed_request("https://data.example.com/fetch", "http://[::ffff:169.254.169.254]/")
    status, answer, _ = call(fns, "create_training_job", body)
    assert (status, answer["message"]) == (
        400,
        "callback_url.url: points at a non-public address (::ffff:169.254.169.254)",
    )


def test_the_address_actually_connected_to_is_checked_at_fetch(
    fns, aws, factory_env, httpserver, strict, callbacks, monkeypatch
):
    # Given public-looking names whose DNS answer is loopback (a rebinding attack)
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host.endswith(".example.com"):
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    dataset = Dataset([{"text": "a", "label": "b"}])
    httpserver.expect_request("/data").respond_with_handler(dataset)
    data_url = f"http://dataset.example.com:{httpserver.port}/data"
    callback_url = f"http://hooks.example.com:{callbacks.port}/callback"
    status, answer, _ = call(fns, "create_training_job", seed_request(data_url, callback_url))
    assert status == 200, answer  # nothing wrong with the names themselves
    # When the job is staged
    stage_pending(fns, aws, factory_env)
    # Then the loopback server was never reached and the job failed, saying why
    assert dataset.calls == []
    job = answer["job_name"]
    status = call(fns, "check_training_status", {"job_name": job})[1]
    assert status["status"] == "Failed"
    assert "refused to connect to non-public address 127.0.0.1" in status["failure_reason"]
    # and the callback to loopback was refused too, and kept for retry rather than dropped
    assert callbacks.received == []
    item = aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(Key={"job_name": job})["Item"]
    assert item["callback_state"] == "retrying"
    assert "non-public address" in item["callback_last_error"]


def test_secrets_never_reach_logs_errors_or_storage(
    fns, aws, factory_env, callbacks, httpserver, factory_logs
):
    # Given a request whose headers carry secrets
    httpserver.expect_request("/data").respond_with_handler(Dataset([{"text": "a", "label": "b"}]))
    body = seed_request(httpserver.url_for("/data"), callbacks.url)
    body["callback_url"]["headers"] = {"Authorization": "Bearer cb-SECRET-1"}
    body["dataset_endpoint"]["headers"] = {"x-api-key": "ds-SECRET-2"}
    # When it goes through its whole life, including a refused callback
    job = call(fns, "create_training_job", body)[1]["job_name"]
    stage_pending(fns, aws, factory_env)
    callbacks.fail_with = [500]
    notify(fns, "notify_completed.json", job)
    bad = json.loads(json.dumps(body))
    bad["callback_url"]["headers"]["Authorization"] = "Bearer cb-SECRET-1\n"
    _, error, _ = call(fns, "create_training_job", bad)
    # Then the secrets were used where they belong
    assert callbacks.received[0].headers["Authorization"] == "Bearer cb-SECRET-1"
    # and appear in no log line, no error, no record field in clear, no S3 object
    assert factory_logs.records  # the logs were really captured
    for secret in ("cb-SECRET-1", "ds-SECRET-2"):
        assert secret not in factory_logs.text
        assert secret not in json.dumps(error)
    item = aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(Key={"job_name": job})["Item"]
    assert "SECRET" not in json.dumps(item, default=lambda v: repr(v))
    bucket = factory_env["DATA_BUCKET"]
    for obj in aws.s3.list_objects_v2(Bucket=bucket, Prefix=f"datasets/{job}/")["Contents"]:
        assert b"SECRET" not in aws.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    described = aws.sagemaker.describe_training_job(TrainingJobName=job)
    assert "SECRET" not in json.dumps(described, default=str)
