"""Seeing inside a running job: its training log lines (paged), its metric series, and its
progress in the status, read from CloudWatch (moto) as SageMaker writes them there."""

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from aifactory import aws, timefmt
from tests.integration.flow import call, notify, staged_job

GROUP = "/aws/sagemaker/TrainingJobs"
NAMESPACE = "/aws/sagemaker/TrainingJobs"
OTHER_KEY = "otherkeyid"
UNKNOWN = "sage-maker-train-20000101-000000-000000"
# Log lines an hour old (CloudWatch refuses lines from the future).
BASE = int(timefmt.now().timestamp() * 1000) - 3_600_000


def _logs() -> Any:
    logs = boto3.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=GROUP)
    return logs


def write_lines(job: str, stream: str, lines: list[tuple[int, str]]) -> None:
    """As SageMaker does: lines (epoch millis, text) into <job>/<stream>."""
    logs = _logs()
    name = f"{job}/{stream}"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=GROUP, logStreamName=name)
    answer = logs.put_log_events(
        logGroupName=GROUP,
        logStreamName=name,
        logEvents=[{"timestamp": t, "message": m} for t, m in lines],
    )
    assert "rejectedLogEventsInfo" not in answer, answer


def training(fns, aws_clients, env, callbacks, httpserver, key: str = "examplekeyid1") -> str:
    """A staged job that SageMaker reports Training."""
    job = staged_job(fns, aws_clients, env, callbacks, httpserver)
    if key != "examplekeyid1":  # the same job, owned by another key
        aws_clients.dynamodb.Table(env["JOBS_TABLE"]).update_item(
            Key={"job_name": job},
            UpdateExpression="SET #o = :o",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":o": key},
        )
    notify(fns, "notify_inprogress.json", job, LastModifiedTime=1000)
    return job


def all_pages(fns, job: str, limit: int, key: str = "examplekeyid1") -> tuple[list[str], Any]:
    """Every page until the last token stops moving on; the messages and the last answer."""
    messages: list[str] = []
    body: dict[str, Any] = {"job_name": job, "limit": limit}
    for _ in range(1000):
        status, answer, _ = call(fns, "get_training_logs", body, key)
        assert status == 200, answer
        messages += [event["message"] for event in answer["events"]]
        if answer["next_token"] is None or not answer["events"]:
            return messages, answer
        body["next_token"] = answer["next_token"]
    raise AssertionError("paging never ended")


# -- logs -------------------------------------------------------------------------------------
def test_logs_of_several_streams_page_exactly_once_in_time_order_with_any_limit(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a training job with two hosts whose lines interleave in time, and a spot restart
    job = training(fns, aws, factory_env, callbacks, httpserver)
    base = BASE
    host1 = [(base + 10 * i, f"host1 line {i}") for i in range(25)]
    host2 = [(base + 10 * i + 5, f"host2 line {i}") for i in range(9)]
    restart = [(base + 900 + i, f"restart line {i}") for i in range(6)]
    write_lines(job, "algo-1-1800000000", host1)
    write_lines(job, "algo-2-1800000000", host2)
    write_lines(job, "algo-1-1800000900", restart)
    expected = [message for _, message in sorted(host1 + host2 + restart)]
    for limit in (1, 2, 3, 7, 40, 1000):
        # When the client pages through the log with that limit
        messages, last = all_pages(fns, job, limit)
        # Then every line comes exactly once, oldest first, and the running job keeps a token
        assert messages == expected, limit
        assert last["next_token"] is not None
        assert last["events"] == []


def test_a_running_jobs_token_reads_on_to_the_lines_written_later_and_ends_with_the_job(
    fns, aws, factory_env, callbacks, httpserver
):
    job = training(fns, aws, factory_env, callbacks, httpserver)
    base = BASE
    write_lines(job, "algo-1-1800000000", [(base + i, f"a{i}") for i in range(3)])
    status, first, _ = call(fns, "get_training_logs", {"job_name": job})
    assert status == 200, first
    assert [e["message"] for e in first["events"]] == ["a0", "a1", "a2"]
    assert first["events"][0]["timestamp"] == timefmt.to_seed(timefmt.from_epoch_millis(base))
    assert first["next_token"]
    # When more lines are written and the job ends
    write_lines(job, "algo-1-1800000000", [(base + 10 + i, f"b{i}") for i in range(2)])
    write_lines(job, "algo-2-1800000000", [(base + 5, "c0")])
    notify(fns, "notify_completed.json", job)
    status, second, _ = call(
        fns, "get_training_logs", {"job_name": job, "next_token": first["next_token"]}
    )
    # Then the token reads on to exactly the new lines, and with everything read it is null
    assert status == 200, second
    assert [e["message"] for e in second["events"]] == ["c0", "b0", "b1"]
    assert second["next_token"] is None


def test_a_staging_job_has_no_lines_yet_and_a_token_to_come_back_with(
    fns, aws, factory_env, callbacks, httpserver
):
    from tests.integration.flow import Dataset, seed_request

    httpserver.expect_request("/d").respond_with_handler(Dataset([{"text": "t", "label": "a"}]))
    status, created, _ = call(
        fns, "create_training_job", seed_request(httpserver.url_for("/d"), callbacks.url)
    )
    assert status == 200
    status, answer, _ = call(fns, "get_training_logs", {"job_name": created["job_name"]})
    assert status == 200, answer
    assert answer["events"] == [] and answer["next_token"]


def test_logs_answer_only_the_owner_and_refuse_foreign_or_forged_tokens(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given two jobs of one key and a job of another key, each with lines
    mine = training(fns, aws, factory_env, callbacks, httpserver)
    also_mine = training(fns, aws, factory_env, callbacks, httpserver)
    theirs = training(fns, aws, factory_env, callbacks, httpserver, key=OTHER_KEY)
    for job in (mine, also_mine, theirs):
        write_lines(job, "algo-1-1800000000", [(BASE + i, f"l{i}") for i in range(4)])
    _, page, _ = call(fns, "get_training_logs", {"job_name": mine, "limit": 2})
    token = page["next_token"]
    _, their_page, _ = call(fns, "get_training_logs", {"job_name": theirs, "limit": 2}, OTHER_KEY)
    # Then another key's job and an unknown job are the same 404
    for job, key in ((theirs, "examplekeyid1"), (mine, OTHER_KEY), (UNKNOWN, "examplekeyid1")):
        status, answer, _ = call(fns, "get_training_logs", {"job_name": job}, key)
        assert (status, answer["status"]) == (404, "error")
        assert answer["message"] == f"job_name: no training job named {job}"
    # and a token of another job, of another owner, or not issued at all is a 400
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for job, next_token, key in (
        (also_mine, token, "examplekeyid1"),
        (theirs, token, OTHER_KEY),
        (mine, their_page["next_token"], "examplekeyid1"),
        (mine, "not-a-token", "examplekeyid1"),
        (mine, forged, "examplekeyid1"),
    ):
        status, answer, _ = call(
            fns, "get_training_logs", {"job_name": job, "next_token": next_token}, key
        )
        assert status == 400, (job, answer)
        assert answer == {"status": "error", "message": "next_token: is not a valid page token"}
    # while the owner's own token reads on
    status, answer, _ = call(fns, "get_training_logs", {"job_name": mine, "next_token": token})
    assert status == 200 and [e["message"] for e in answer["events"]] == ["l2", "l3"]
    # and a token stays its owner's: were the job another owner's now, the token is refused
    aws.dynamodb.Table(factory_env["JOBS_TABLE"]).update_item(
        Key={"job_name": mine},
        UpdateExpression="SET #o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": OTHER_KEY},
    )
    status, answer, _ = call(
        fns, "get_training_logs", {"job_name": mine, "next_token": token}, OTHER_KEY
    )
    assert (status, answer["message"]) == (400, "next_token: is not a valid page token")


@pytest.mark.parametrize(
    ("limit", "problem"),
    [
        (0, "limit: must be greater than or equal to 1"),
        (10001, "limit: must be less than or equal to 10000"),
        ("ten", "limit: must be a valid integer"),
        (True, "limit: must be an integer, not a boolean"),
        (2.5, "limit: must be a valid integer"),
    ],
)
def test_a_bad_limit_is_a_400_naming_it(fns, limit, problem):
    status, answer, _ = call(fns, "get_training_logs", {"job_name": UNKNOWN, "limit": limit})
    assert status == 400
    assert answer["status"] == "error" and answer["message"].startswith(problem), answer


# -- metrics ----------------------------------------------------------------------------------
def _created_minutes_ago(aws_clients, env, job: str, minutes: int) -> datetime:
    created = timefmt.now() - timedelta(minutes=minutes)
    aws_clients.dynamodb.Table(env["JOBS_TABLE"]).update_item(
        Key={"job_name": job},
        UpdateExpression="SET created_at = :c",
        ExpressionAttributeValues={":c": timefmt.to_iso(created)},
    )
    return created


def put_metric(job: str, name: str, points: list[tuple[datetime, float]]) -> None:
    boto3.client("cloudwatch").put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": "Host", "Value": f"{job}/algo-1"}],
                "Timestamp": moment,
                "Value": value,
            }
            for moment, value in points
        ],
    )


def minute(created: datetime, n: int) -> datetime:
    """A moment n minutes and 10 s after the start of the job's creation minute."""
    start = created.replace(second=0, microsecond=0, tzinfo=UTC)
    return start + timedelta(minutes=n, seconds=10)


def test_metrics_are_series_per_minute_in_time_order_for_the_owner_only(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a job that has trained for some minutes, its loss falling
    job = training(fns, aws, factory_env, callbacks, httpserver)
    created = _created_minutes_ago(aws, factory_env, job, 10)
    put_metric(job, "train:loss", [(minute(created, 3), 0.9), (minute(created, 1), 2.0)])
    put_metric(job, "train:loss", [(minute(created, 1) + timedelta(seconds=20), 1.0)])
    put_metric(job, "train:step", [(minute(created, 1), 50), (minute(created, 3), 150)])
    put_metric(job, "train:learning_rate", [(minute(created, 3), 0.19)])
    # When its owner asks for the metrics
    status, answer, _ = call(fns, "get_training_metrics", {"job_name": job})
    # Then each series is in time order, one point per minute (its average)
    assert status == 200, answer
    assert answer["status"] == "success" and answer["job_name"] == job
    seed = timefmt.to_seed
    start_of = lambda n: seed(minute(created, n) - timedelta(seconds=10))  # noqa: E731
    series = {
        name: [(point["timestamp"], point["value"]) for point in points]
        for name, points in answer["metrics"].items()
    }
    assert series == {
        "train:loss": [(start_of(1), 1.5), (start_of(3), 0.9)],
        "train:step": [(start_of(1), 50.0), (start_of(3), 150.0)],
        "train:learning_rate": [(start_of(3), 0.19)],
    }
    # And another key's job and an unknown one are the same 404
    for job_name, key in ((job, OTHER_KEY), (UNKNOWN, "examplekeyid1")):
        status, answer, _ = call(fns, "get_training_metrics", {"job_name": job_name}, key)
        assert status == 404 and answer["message"] == f"job_name: no training job named {job_name}"


def test_a_job_with_no_metrics_yet_has_empty_series(fns, aws, factory_env, callbacks, httpserver):
    job = training(fns, aws, factory_env, callbacks, httpserver)
    status, answer, _ = call(fns, "get_training_metrics", {"job_name": job})
    assert status == 200, answer
    assert answer["metrics"] == {"train:loss": [], "train:step": [], "train:learning_rate": []}


# -- progress ---------------------------------------------------------------------------------
class CloudWatchCalls:
    """Counts the handlers' GetMetricData calls."""

    def __init__(self) -> None:
        self.count = 0
        aws.client("cloudwatch").meta.events.register(
            "before-call.cloudwatch.GetMetricData", self._seen
        )

    def _seen(self, **_: Any) -> None:
        self.count += 1

    def close(self) -> None:
        aws.client("cloudwatch").meta.events.unregister(
            "before-call.cloudwatch.GetMetricData", self._seen
        )


@pytest.fixture
def cloudwatch_calls(factory_env):
    """Counts GetMetricData calls from the handlers' client (built after settings change)."""
    counters: list[CloudWatchCalls] = []

    def start() -> CloudWatchCalls:
        counters.append(CloudWatchCalls())
        return counters[-1]

    yield start
    for counter in counters:
        counter.close()


def test_status_shows_progress_while_training_cached_for_a_few_seconds(
    fns, aws, factory_env, callbacks, httpserver, settings_override, cloudwatch_calls, monkeypatch
):
    settings_override(PROGRESS_CACHE_SECONDS="5")
    calls = cloudwatch_calls()
    start = timefmt.now()
    clock = [start]
    monkeypatch.setattr(timefmt, "now", lambda: clock[0])
    # Given a training job (400 steps) that has reported step 150
    job = training(fns, aws, factory_env, callbacks, httpserver)
    created = _created_minutes_ago(aws, factory_env, job, 10)
    put_metric(job, "train:step", [(minute(created, 2), 50), (minute(created, 4), 150)])
    # When a client polls its status five times in a second
    answers = []
    for tick in range(5):
        clock[0] = start + timedelta(seconds=tick / 4)
        answers.append(call(fns, "check_training_status", {"job_name": job})[1])
    # Then each shows the progress, read from CloudWatch once
    assert [a["progress"] for a in answers] == [
        {"step": 150, "total_steps": 400, "percent": 37.5}
    ] * 5
    assert calls.count == 1
    # and once the cache is older than a few seconds, the next poll reads the new step
    put_metric(job, "train:step", [(minute(created, 5), 400)])
    clock[0] = start + timedelta(seconds=6)
    answer = call(fns, "check_training_status", {"job_name": job})[1]
    assert answer["progress"] == {"step": 400, "total_steps": 400, "percent": 100.0}
    assert calls.count == 2


def test_progress_is_null_without_a_step_and_absent_when_not_training(
    fns, aws, factory_env, callbacks, httpserver, settings_override, cloudwatch_calls
):
    settings_override(PROGRESS_CACHE_SECONDS="0")
    calls = cloudwatch_calls()
    # A staged job SageMaker has not reported yet: no progress, and no CloudWatch call
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    assert "progress" not in call(fns, "check_training_status", {"job_name": job})[1]
    assert calls.count == 0
    # Training, with no step reported: progress is null
    notify(fns, "notify_inprogress.json", job, LastModifiedTime=1000)
    assert call(fns, "check_training_status", {"job_name": job})[1]["progress"] is None
    assert calls.count == 1
    # Ended: no progress field, and no call
    notify(fns, "notify_completed.json", job)
    assert "progress" not in call(fns, "check_training_status", {"job_name": job})[1]
    assert calls.count == 1
