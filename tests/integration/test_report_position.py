"""The callback's report wherever the image put it: output.tar.gz, the start or the end of a
large model.tar.gz; past the scan bounds, the `avg` row from SageMaker's final metrics."""

import io
import json
import os
import tarfile

import pytest

from aifactory import runtime
from tests.integration.flow import call, complete, next_retry, staged_job
from tests.support import Context

REPORT = {
    "avg": {"recall": 0.5712, "f1-score": 0.5549, "support": 5183, "precision": 0.5401},
    "details": [{"recall": 0.79, "f1-score": 0.734, "support": 3189, "precision": 0.6, "no": "0"}],
}
SEED_AVG = {"precision": "0.54", "recall": "0.57", "f1-score": "0.55", "support": "5183"}


def archive(*members: tuple[str, bytes]) -> bytes:
    """A .tar.gz with its members in this order (fast compression: the data is random)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def report_member(path: str = "evaluation.json") -> tuple[str, bytes]:
    return path, json.dumps(REPORT).encode()


@pytest.fixture
def job(fns, aws, factory_env, callbacks, httpserver):
    return staged_job(fns, aws, factory_env, callbacks, httpserver)


def test_report_in_output_tar_is_sent(fns, aws, factory_env, callbacks, job):
    # Given the report in output.tar.gz and a model without one
    artifacts = {
        "model.tar.gz": archive(("weights.bin", os.urandom(256 * 1024))),
        "output.tar.gz": archive(report_member("data/evaluation.json")),
    }
    # When the job completes
    complete(fns, aws, factory_env, job, artifacts)
    # Then the callback carries it
    assert callbacks.received[0].json["log"]["avg"] == SEED_AVG


def test_the_end_of_a_job_is_logged_once_with_the_f1_of_the_report_it_sends(
    fns, aws, factory_env, callbacks, job, factory_logs, settings_override
):
    # Given the report in output.tar.gz, where the bundled trainers write it, and a receiver
    # that fails the first delivery
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    callbacks.fail_with = [503]
    artifacts = {
        "model.tar.gz": archive(("weights.bin", b"w")),
        "output.tar.gz": archive(report_member("data/evaluation.json")),
    }
    # When the job completes, its completion event comes again, and the callback is retried
    complete(fns, aws, factory_env, job, artifacts)
    complete(fns, aws, factory_env, job, artifacts)
    retried = fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    assert retried == {"batchItemFailures": []}
    assert len(callbacks.received) == 2
    # Then one log line tells its end, with the F1 of the report the callback carries (the
    # local Factory's terminal prints it: it never looks for the report itself)
    ended = [r for r in factory_logs.records if r["message"] == "job ended"]
    assert [(r["job_name"], r["status"], r["f1"]) for r in ended] == [(job, "Completed", "0.55")]
    assert callbacks.received[1].json["log"]["avg"]["f1-score"] == "0.55"


def test_report_at_the_start_of_model_tar_is_sent(fns, aws, factory_env, callbacks, job):
    # Given the report first in model.tar.gz, model files after it, and no output.tar.gz
    model = archive(report_member(), ("weights.bin", os.urandom(1024 * 1024)))
    # When the job completes
    complete(fns, aws, factory_env, job, {"model.tar.gz": model})
    # Then the callback carries it
    assert callbacks.received[0].json["log"]["avg"] == SEED_AVG


def test_report_after_65_mib_of_model_files_is_sent(fns, aws, factory_env, callbacks, job):
    # Given the report last in a model.tar.gz, behind more than 64 MiB of incompressible files
    model = archive(
        ("weights.bin", os.urandom(65 * 1024 * 1024)), report_member("x/evaluation.json")
    )
    assert len(model) > 64 * 1024 * 1024
    # When the job completes (default bounds)
    complete(fns, aws, factory_env, job, {"model.tar.gz": model})
    # Then the callback carries it
    log = callbacks.received[0].json["log"]
    assert log["avg"] == SEED_AVG and [row["no"] for row in log["details"]] == ["0"]
    assert "source" not in log


def _with_final_metrics(monkeypatch, metrics):
    """SageMaker's DescribeTrainingJob answer, with the FinalMetricDataList it would record
    from the image's log (the emulator keeps none)."""
    training = runtime.get_runtime().training
    describe = training.describe

    def described(job_name):
        return {**describe(job_name), "FinalMetricDataList": metrics}

    monkeypatch.setattr(training, "describe", described)


FINAL_METRICS = [
    {"MetricName": "avg:precision", "Value": 0.5401},
    {"MetricName": "avg:recall", "Value": 0.5712},
    {"MetricName": "avg:f1-score", "Value": 0.5549},
    {"MetricName": "avg:support", "Value": 5183.0},
    {"MetricName": "train:loss", "Value": 0.1},
]


def test_past_the_scan_bound_the_avg_row_comes_from_final_metrics_and_says_so(
    fns, aws, factory_env, callbacks, job, settings_override, monkeypatch
):
    # Given a report behind more bytes than the scan bound, and SageMaker's final metrics
    settings_override(REPORT_SCAN_MAX_BYTES="65536")
    _with_final_metrics(monkeypatch, FINAL_METRICS)
    model = archive(("weights.bin", os.urandom(512 * 1024)), report_member())
    # When the job completes
    complete(fns, aws, factory_env, job, {"model.tar.gz": model})
    # Then the callback's avg row is SageMaker's, and the log says where it came from
    log = callbacks.received[0].json["log"]
    assert log["avg"] == SEED_AVG
    assert log["details"] == []
    assert log["source"] == "FinalMetricDataList"
    assert log["note"] == "evaluation.json not reached within the scan bounds of model.tar.gz"


def test_past_the_scan_time_bound_the_avg_row_comes_from_final_metrics(
    fns, aws, factory_env, callbacks, job, settings_override, monkeypatch
):
    # Given a report at the end of a model.tar.gz, and a scan allowed next to no time
    settings_override(REPORT_SCAN_MAX_SECONDS="0.000001")
    _with_final_metrics(monkeypatch, FINAL_METRICS)
    model = archive(("weights.bin", os.urandom(512 * 1024)), report_member())
    # When the job completes
    complete(fns, aws, factory_env, job, {"model.tar.gz": model})
    # Then the scan stopped at its time bound, and the avg row is SageMaker's
    log = callbacks.received[0].json["log"]
    assert (log["avg"], log["source"]) == (SEED_AVG, "FinalMetricDataList")


def test_past_the_scan_bound_without_final_metrics_the_log_is_null(
    fns, aws, factory_env, callbacks, job, settings_override, monkeypatch
):
    # Given a report behind more bytes than the scan bound, and only part of the metrics
    settings_override(REPORT_SCAN_MAX_BYTES="65536")
    _with_final_metrics(monkeypatch, FINAL_METRICS[:2])
    model = archive(("weights.bin", os.urandom(512 * 1024)), report_member())
    # When the job completes
    complete(fns, aws, factory_env, job, {"model.tar.gz": model})
    # Then the callback is still sent, with no log
    callback = callbacks.received[0].json
    assert callback["log"] is None and callback["model"]


def test_a_report_the_store_cannot_keep_is_still_sent(
    fns, aws, factory_env, callbacks, job, monkeypatch, factory_logs
):
    # Given a report in output.tar.gz, and the jobs table refusing to keep a copy of it
    store = runtime.get_runtime().store

    def refuse(job_name, report):
        raise RuntimeError("table unavailable")

    monkeypatch.setattr(store, "save_report", refuse)
    # When the job completes
    artifacts = {
        "model.tar.gz": archive(("weights.bin", b"w")),
        "output.tar.gz": archive(report_member()),
    }
    complete(fns, aws, factory_env, job, artifacts)
    # Then the client still gets its report, and the log says the copy was not kept
    assert callbacks.received[0].json["log"]["avg"] == SEED_AVG
    (record,) = [r for r in factory_logs.records if r["message"] == "could not keep the report"]
    assert (record["level"], record["job_name"]) == ("ERROR", job)
    assert "table unavailable" in record["exception"]


def test_a_replay_after_the_artifacts_are_gone_keeps_the_report_in_the_status(
    fns, aws, factory_env, callbacks, job
):
    # Given a job whose callback carried its report
    artifacts = {
        "model.tar.gz": archive(("weights.bin", b"w")),
        "output.tar.gz": archive(report_member()),
    }
    complete(fns, aws, factory_env, job, artifacts)
    assert callbacks.received[0].json["log"]["avg"] == SEED_AVG
    # When its artifacts are deleted and the client then replays the callback
    bucket = factory_env["DATA_BUCKET"]
    for name in artifacts:
        aws.s3.delete_object(Bucket=bucket, Key=f"models/{job}/output/{name}")
    assert call(fns, "redeliver_callback", {"job_name": job})[0] == 202
    fns["retry_callback"].lambda_handler(next_retry(aws, factory_env), Context())
    # Then the replay has no report to send, but the status still shows the one kept
    assert callbacks.received[-1].json["log"] is None
    status = call(fns, "check_training_status", {"job_name": job})[1]
    assert status["report"]["avg"] == SEED_AVG
