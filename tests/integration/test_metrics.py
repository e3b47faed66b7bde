"""What an operator's dashboards and alarms read: the embedded-metric-format (EMF) lines each
handler prints, with their names, units and low-cardinality dimensions."""

import json
import warnings
from typing import Any

import pytest
from werkzeug import Response

from aifactory import metrics as metrics_module
from aifactory import runtime
from aifactory.metrics import metrics
from tests.integration.flow import (
    Dataset,
    call,
    next_retry,
    notify,
    seed_request,
    stage_pending,
    staged_data,
)
from tests.support import Context

NAMESPACE = "AIFactory"
STATUSES = {"InProgress", "Completed", "Failed", "Stopping", "Stopped"}


class Emitted:
    """Every metric the handlers printed: (name, unit, value, dimensions)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.metrics: list[tuple[str, str, float, dict[str, str]]] = []

    def read(self) -> list[tuple[str, str, float, dict[str, str]]]:
        for line in self.capsys.readouterr().out.splitlines():
            try:
                blob = json.loads(line)
            except ValueError:
                continue
            if not isinstance(blob, dict) or "_aws" not in blob:
                continue
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                assert directive["Namespace"] == NAMESPACE
                names = [n for dims in directive["Dimensions"] for n in dims]
                dimensions = {name: blob[name] for name in names}
                for metric in directive["Metrics"]:
                    values = blob[metric["Name"]]
                    for value in values if isinstance(values, list) else [values]:
                        self.metrics.append((metric["Name"], metric["Unit"], value, dimensions))
        return self.metrics

    def named(self, name: str) -> list[tuple[str, float, dict[str, str]]]:
        return [(unit, value, dims) for n, unit, value, dims in self.read() if n == name]


@pytest.fixture
def emitted(capsys: pytest.CaptureFixture[str]) -> Emitted:
    # Only what this test causes: nothing printed before it, and nothing that code run outside
    # a handler (unit tests in the same process) recorded without flushing.
    metrics.clear_metrics()
    capsys.readouterr()
    return Emitted(capsys)


def _with_training_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """DescribeTrainingJob as SageMaker answers for an ended job (moto leaves the times out)."""
    training = runtime.get_runtime().training
    describe = training.describe

    def described(job_name: str) -> dict[str, Any]:
        return {**describe(job_name), "TrainingTimeInSeconds": 420, "BillableTimeInSeconds": 400}

    monkeypatch.setattr(training, "describe", described)


def test_a_job_life_emits_every_business_metric_with_its_unit_and_low_cardinality_dimensions(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch, settings_override, emitted
):
    # Given a dataset of 3 records whose first page fails once, and a callback receiver that
    # fails the first delivery
    records = [{"text": f"t{i}", "label": "a"} for i in range(3)]
    dataset = Dataset(records)
    failed_once: list[bool] = []

    def flaky(request: Any) -> Any:
        if not failed_once:
            failed_once.append(True)
            return Response("busy", status=503)
        return dataset(request)

    httpserver.expect_request("/data").respond_with_handler(flaky)
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0")
    _with_training_times(monkeypatch)
    # When a job is created, staged, trained, and its callback delivered on the second attempt
    status, answer, _ = call(
        fns, "create_training_job", seed_request(httpserver.url_for("/data"), callbacks.url)
    )
    assert status == 200, answer
    job = answer["job_name"]
    stage_pending(fns, aws, factory_env)
    callbacks.fail_with = [500]
    notify(fns, "notify_completed.json", job)
    retry = next_retry(aws, factory_env)
    assert fns["retry_callback"].lambda_handler(retry, Context()) == {"batchItemFailures": []}
    # Then each metric was emitted once per event, with its unit, under the service dimension
    service = {"service": "aifactory"}
    assert emitted.named("JobsCreated") == [("Count", 1.0, service)]
    assert emitted.named("RecordsStaged") == [("Count", 3.0, service)]
    staged_bytes = float(len(staged_data(aws, factory_env, job)))
    assert emitted.named("BytesStaged") == [("Bytes", staged_bytes, service)]
    assert emitted.named("PageRetries") == [("Count", 1.0, service)]
    [(unit, staging_seconds, dims)] = emitted.named("StagingSeconds")
    assert (unit, dims) == ("Seconds", service) and staging_seconds >= 0
    # the job's end counts by status, its one dimension beside the service
    assert emitted.named("JobsEnded") == [("Count", 1.0, {**service, "status": "Completed"})]
    assert emitted.named("TrainingSeconds") == [("Seconds", 420.0, service)]
    assert emitted.named("BillableSeconds") == [("Seconds", 400.0, service)]
    # two attempts, one delivery, its latency measured from the job's end
    assert [v for _, v, _ in emitted.named("CallbackAttempts")] == [1.0, 1.0]
    assert emitted.named("CallbacksDelivered") == [("Count", 1.0, service)]
    [(unit, latency, dims)] = emitted.named("CallbackLatencySeconds")
    assert (unit, dims) == ("Seconds", service) and latency >= 0
    assert emitted.named("CallbacksFailed") == []
    # and no dimension ever names the job, the tenant or the key
    for _, _, _, dims in emitted.read():
        assert set(dims) <= {"service", "status"}
        assert dims.get("status", "Completed") in STATUSES


def test_a_callback_given_up_counts_as_failed(
    fns, aws, factory_env, callbacks, httpserver, settings_override, emitted
):
    # Given a job whose callback is failing, with a retry window already over
    settings_override(CALLBACK_RETRY_BASE_SECONDS="0", CALLBACK_RETRY_WINDOW_SECONDS="0")
    records = [{"text": "t", "label": "a"}]
    httpserver.expect_request("/data").respond_with_handler(Dataset(records))
    _, answer, _ = call(
        fns, "create_training_job", seed_request(httpserver.url_for("/data"), callbacks.url)
    )
    stage_pending(fns, aws, factory_env)
    callbacks.fail_with = [500, 500]
    notify(fns, "notify_completed.json", answer["job_name"])
    # When its retry fails too
    retry = next_retry(aws, factory_env)
    fns["retry_callback"].lambda_handler(retry, Context())
    # Then the callback counts once as failed, and was never delivered
    assert emitted.named("CallbacksFailed") == [("Count", 1.0, {"service": "aifactory"})]
    assert emitted.named("CallbacksDelivered") == []


def test_a_job_that_fails_while_staging_counts_as_ended_failed(
    fns, aws, factory_env, callbacks, httpserver, emitted
):
    # Given a dataset endpoint that refuses the request
    httpserver.expect_request("/data").respond_with_data("no", status=404)
    _, answer, _ = call(
        fns, "create_training_job", seed_request(httpserver.url_for("/data"), callbacks.url)
    )
    # When staging runs
    stage_pending(fns, aws, factory_env)
    # Then the job ended Failed, counted under that status, and nothing was staged
    assert emitted.named("JobsEnded") == [
        ("Count", 1.0, {"service": "aifactory", "status": "Failed"})
    ]
    assert emitted.named("RecordsStaged") == []


def test_with_metrics_switched_off_as_the_local_factory_does_nothing_is_printed(
    fns, aws, factory_env, callbacks, httpserver, monkeypatch, emitted
):
    # Given metrics switched off, as the local Factory runs (its terminal is for people)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    records = [{"text": f"t{i}", "label": "a"} for i in range(3)]
    httpserver.expect_request("/data").respond_with_handler(Dataset(records))
    httpserver.expect_request("/gone").respond_with_data("no", status=404)
    # When jobs are created, staged and ended, one of them during staging, more than a
    # hundred times over for one metric
    for _ in range(101):
        metrics_module.job_created()
    for path in ("/data", "/gone"):
        status, answer, _ = call(
            fns, "create_training_job", seed_request(httpserver.url_for(path), callbacks.url)
        )
        assert status == 200, answer
    stage_pending(fns, aws, factory_env)
    # Then no metric line was printed, not even the ones Powertools prints on its own
    assert emitted.read() == []


@pytest.mark.parametrize("disabled", [False, True], ids=["deployed", "local"])
def test_a_handler_that_records_no_metric_prints_nothing_and_warns_nothing(
    fns, aws, factory_env, monkeypatch, emitted, disabled
):
    # Given metrics on (deployed) or off (as the local Factory runs)
    if disabled:
        monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    # When a handler runs that records no metric (a status read of an unknown job), with
    # every warning shown, as on a fresh interpreter
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, _, _ = call(
            fns, "check_training_status", {"job_name": "sage-maker-train-20260101-000000-abcdef"}
        )
    # Then it flushed no metric line, and warned nothing (Powertools would say "No application
    # metrics to publish" on stderr)
    assert status == 404
    assert emitted.read() == []
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
