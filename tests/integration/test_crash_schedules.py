"""Nothing lost on a crash, for the deployed code: a property-based test over the pipeline.

Each schedule, drawn by hypothesis, runs jobs through the functions the way AWS drives them,
against moto: staging messages, SageMaker's end events, the callback retry queue and the
scheduled reconciler. At drawn points an invocation crashes: one of its AWS calls (any call
of staging, the notifier, callback delivery or the reconciler) fails before it reaches AWS,
or after AWS has done it, and from then on nothing else of that invocation reaches AWS, as
when Lambda's process dies. Redelivery then runs as SQS and EventBridge would (or the
schedule loses the end event), the reconciler sweeps, and the invariants are checked:

- every job ends in a terminal state (here Completed) and its callback is delivered;
- every delivery of a job's callback carries one webhook-id, one status, one TrainingEndTime;
- a job is trained once (one CreateTrainingJob that SageMaker accepted), and once its
  delivery is recorded, its callback is not sent again;
- the staged records are exactly the dataset's, in order;
- nothing is left behind: no message in a queue, no unfinished multipart upload.

`benchmarks/crash_schedules.py` runs more schedules and prints the crash points they reached.
"""

import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from aifactory import runtime, timefmt
from aifactory.models import TERMINAL_STATUSES
from aifactory.training_names import training_name
from aifactory_local.callback_receiver import CallbackReceiver
from tests.integration.flow import Dataset, call, seed_request, staged_data
from tests.support import Context, load_event, sqs_event, state_change, tar_gz

PHASES = ("staging", "notifier", "callback", "reconciler")
PAGE = 10
# Schedules run by `make test`; the benchmark runs more.
SCHEDULES = int(os.environ.get("AIFACTORY_CRASH_SCHEDULES", "25"))
# What the schedules reached, for the benchmark's report: "phase before|after Operation".
REACHED: Counter[str] = Counter()
SCHEDULES_RUN: Counter[str] = Counter()
QUEUES = ("STAGE_QUEUE_URL", "CALLBACK_RETRY_QUEUE_URL", "CALLBACK_DLQ_URL")


class Crash(Exception):
    """The invocation died at an AWS call."""


@dataclass(frozen=True)
class CrashPoint:
    phase: str
    call: int  # the n-th AWS call of an invocation of that phase (each point fires once)
    after: bool  # after AWS did it (its answer never came back), not before


@dataclass
class Injector:
    """botocore handlers on every client: count an invocation's AWS calls, crash at a point,
    and count the training jobs SageMaker accepted."""

    points: list[CrashPoint] = field(default_factory=list)
    phase: str | None = None
    calls: int = 0
    dead: bool = False
    fired: set[CrashPoint] = field(default_factory=set)
    created: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, phase: str) -> None:
        with self.lock:
            self.phase, self.calls, self.dead = phase, 0, False

    def disarm(self) -> bool:
        """Back to no injection; True if the invocation crashed."""
        with self.lock:
            crashed, self.phase, self.dead = self.dead, None, False
            return crashed

    def _due(self, number: int, after: bool) -> CrashPoint | None:
        for point in self.points:
            if point not in self.fired and (point.phase, point.call, point.after) == (
                self.phase,
                number,
                after,
            ):
                return point
        return None

    def _fire(self, point: CrashPoint, operation: str) -> Crash:
        self.fired.add(point)
        self.dead = True
        REACHED[f"{point.phase} {'after' if point.after else 'before'} {operation}"] += 1
        return Crash(f"{point.phase} crashed {'after' if point.after else 'before'} {operation}")

    def before_call(self, model: Any, params: Any, context: dict[str, Any], **_: Any) -> Any:
        with self.lock:
            if self.phase is not None:
                if self.dead:
                    raise Crash("the invocation is dead")
                number, self.calls = self.calls, self.calls + 1
                context["call-number"] = number
                point = self._due(number, after=False)
                if point is not None:
                    raise self._fire(point, model.name)
            if model.name == "CreateTrainingJob":
                name = json.loads(params["body"])["TrainingJobName"]
                context["training-job"] = name
                if self.created[name]:
                    return _name_in_use(name)  # SageMaker's answer, which moto does not give
        return None

    def after_call(self, model: Any, context: dict[str, Any], http_response: Any, **_: Any) -> None:
        with self.lock:
            if model.name == "CreateTrainingJob" and http_response.status_code == 200:
                self.created[context["training-job"]] += 1
            if self.phase is None or "call-number" not in context:
                return
            point = self._due(context["call-number"], after=True)
            if point is not None:
                raise self._fire(point, model.name)


def _name_in_use(name: str) -> tuple[AWSResponse, dict[str, Any]]:
    """SageMaker's refusal of a training job name that is taken (moto accepts it again)."""
    message = f"Training job names must be unique within an AWS account and region ({name})"
    error = {"Error": {"Code": "ResourceInUse", "Message": message}}
    return AWSResponse("", 400, {}, None), {**error, "ResponseMetadata": {"HTTPStatusCode": 400}}


class World:
    """Jobs driven through the functions the way AWS drives them, with crashes injected."""

    def __init__(
        self,
        fns: dict[str, Any],
        env: dict[str, str],
        injector: Injector,
        receiver: CallbackReceiver,
        lose_ends: bool,
    ) -> None:
        self.fns, self.env, self.injector, self.receiver = fns, env, injector, receiver
        self.lose_ends = lose_ends
        self.sqs = boto3.client("sqs")
        self.s3 = boto3.client("s3")
        self.table = boto3.resource("dynamodb").Table(env["JOBS_TABLE"])
        self.now = datetime.now(UTC)
        self.names: list[str] = []
        self.records: dict[str, list[Any]] = {}
        self.ended: set[str] = set()  # training jobs whose end SageMaker has announced
        self.delivered: dict[str, int] = {}  # callbacks received when delivery was recorded

    # -- AWS's side ---------------------------------------------------------------------------
    def invoke(self, phase: str, function: str, event: dict[str, Any]) -> tuple[bool, Any]:
        """One invocation: (crashed, its result). A crash is an invocation that failed."""
        self.injector.arm(phase)
        result = None
        try:
            result = self.fns[function].lambda_handler(event, Context())
        except Crash:
            pass
        finally:
            crashed = self.injector.disarm()
            self._note_deliveries()
        return crashed, result

    def drain(self, queue: str, phase: str, function: str, sample: str) -> int:
        """Hand each visible message of a queue to its function, as SQS would. A failed one
        shows again at once (as after its wait). The number of invocations."""
        url, invocations = self.env[queue], 0
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return invocations
            invocations += 1
            assert invocations < 60, f"{queue} never empties"
            message = messages[0]
            event = sqs_event(
                sample,
                json.loads(message["Body"]),
                int(message["Attributes"]["ApproximateReceiveCount"]),
            )
            event["Records"][0]["receiptHandle"] = message["ReceiptHandle"]
            crashed, result = self.invoke(phase, function, event)
            if not crashed and result == {"batchItemFailures": []}:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            else:
                self.sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )

    def training_ends(self) -> int:
        """SageMaker finishes each training job it was given (moto: at once), and EventBridge
        invokes the notifier with the end, again after a failure (Lambda's two retries of an
        asynchronous invocation) or, if the schedule loses ends, never again."""
        invocations = 0
        for item in self.items():
            if not item.get("sagemaker_job"):
                continue
            name = training_name(item)
            if name in self.ended:
                continue
            self.ended.add(name)
            bucket = self.env["DATA_BUCKET"]
            self.s3.put_object(
                Bucket=bucket,
                Key=f"models/{name}/output/model.tar.gz",
                Body=tar_gz({"model.bin": b"weights"}),
            )
            event = state_change(
                "notify_completed.json",
                name,
                ModelArtifacts={
                    "S3ModelArtifacts": f"s3://{bucket}/models/{name}/output/model.tar.gz"
                },
            )
            for _ in range(3):
                invocations += 1
                crashed, _ = self.invoke("notifier", "notify", event)
                if not crashed or self.lose_ends:
                    break
        return invocations

    def sweep(self) -> int:
        """The scheduled reconciler, later: past the stale claim window and the staging bound."""
        self.now += timedelta(minutes=30)
        crashed, counts = self.invoke("reconciler", "reconcile", load_event("reconcile.json"))
        if crashed or counts is None:
            return 1
        return sum(v for k, v in counts.items() if k != "checked")

    def run(self) -> None:
        for _ in range(20):
            moved = self.drain("STAGE_QUEUE_URL", "staging", "stage_dataset", "stage_dataset.json")
            moved += self.training_ends()
            moved += self.drain(
                "CALLBACK_RETRY_QUEUE_URL", "callback", "retry_callback", "retry_callback.json"
            )
            moved += self.sweep()
            if not moved and all(self.settled(item) for item in self.items()):
                return
        raise AssertionError(f"the pipeline never settled: {self.items()}")

    # -- what the client and the bucket see ---------------------------------------------------
    def create(self, url: str, records: list[Any]) -> str:
        status, answer, _ = call(
            self.fns, "create_training_job", seed_request(url, self.receiver.url, PAGE)
        )
        assert status == 200, answer
        name = str(answer["job_name"])
        self.names.append(name)
        self.records[name] = records
        return name

    def items(self) -> list[dict[str, Any]]:
        return [
            self.table.get_item(Key={"job_name": name}, ConsistentRead=True)["Item"]
            for name in self.names
        ]

    @staticmethod
    def settled(item: dict[str, Any]) -> bool:
        return item["status"] in TERMINAL_STATUSES and item.get("callback_state") == "delivered"

    def _note_deliveries(self) -> None:
        for item in self.items():
            name = item["job_name"]
            if item.get("callback_state") == "delivered" and name not in self.delivered:
                self.delivered[name] = len(self.receiver.for_job(name))

    def check(self) -> None:
        for item in self.items():
            name = item["job_name"]
            assert item["status"] == "Completed", item
            assert item.get("callback_state") == "delivered", item
            received = self.receiver.for_job(name)
            assert received, name
            headers = [{k.lower(): v for k, v in c.headers.items()} for c in received]
            assert len({h["webhook-id"] for h in headers}) == 1
            assert {c.json["status"] for c in received} == {"Completed"}
            assert len({c.json["TrainingEndTime"] for c in received}) == 1, received
            assert len(received) == self.delivered[name], "a delivered callback was sent again"
            assert self.injector.created[training_name(item)] == 1, self.injector.created
            expected = b"".join(
                json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                for r in self.records[name]
            )
            assert staged_data(self, self.env, name) == expected
        for queue in QUEUES:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.env[queue], AttributeNames=["All"]
            )["Attributes"]
            left = sum(
                int(attributes[a])
                for a in (
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                )
            )
            assert left == 0, (queue, attributes)
        uploads = self.s3.list_multipart_uploads(Bucket=self.env["DATA_BUCKET"], Prefix="datasets/")
        assert not uploads.get("Uploads"), uploads["Uploads"]


# -- the property -----------------------------------------------------------------------------
crash_points = st.builds(
    CrashPoint,
    phase=st.sampled_from(PHASES),
    call=st.integers(min_value=0, max_value=24),
    after=st.booleans(),
)
schedules = st.fixed_dictionaries(
    {
        "sizes": st.lists(st.integers(min_value=1, max_value=35), min_size=1, max_size=2),
        "failing_callbacks": st.integers(min_value=0, max_value=2),
        "lose_ends": st.booleans(),
        "crashes": st.lists(crash_points, min_size=1, max_size=2, unique=True),
    }
)


@pytest.fixture
def injector(factory_env: dict[str, str]) -> Iterator[Injector]:
    """The injector's handlers on every client built from now on (the functions' included)."""
    injector = Injector()
    events = boto3._get_default_session().events
    events.register("before-call", injector.before_call, unique_id="crash-before")
    events.register("after-call", injector.after_call, unique_id="crash-after")
    runtime.reset()
    yield injector
    events.unregister("before-call", unique_id="crash-before")
    events.unregister("after-call", unique_id="crash-after")
    runtime.reset()


@pytest.fixture(scope="module")
def datasets() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.stop()


def fresh_start(env: dict[str, str]) -> None:
    """Each schedule sees only its own jobs and messages."""
    sqs = boto3.client("sqs")
    for queue in QUEUES:
        sqs.purge_queue(QueueUrl=env[queue])
    table = boto3.resource("dynamodb").Table(env["JOBS_TABLE"])
    for item in table.scan(ProjectionExpression="job_name, sweep").get("Items", []):
        if "sweep" in item:
            table.update_item(Key={"job_name": item["job_name"]}, UpdateExpression="REMOVE sweep")


@settings(
    max_examples=SCHEDULES,
    deadline=None,
    derandomize=True,
    database=None,
    # A failure prints its schedule; shrinking it through the pipeline takes minutes.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=schedules)
def test_every_job_ends_once_with_its_callback_whatever_crashes(
    fns, factory_env, injector, datasets, monkeypatch, schedule
):
    fresh_start(factory_env)
    injector.points, injector.fired = list(schedule["crashes"]), set()
    SCHEDULES_RUN["schedules"] += 1
    with CallbackReceiver() as receiver, monkeypatch.context() as patch:
        # Shards of about ten records, so staging checkpoints several times
        patch.setenv("STAGING_SHARD_BYTES", "300")
        # A callback retry is due at once: the schedule's clock, not SQS's, spaces them
        patch.setenv("CALLBACK_RETRY_BASE_SECONDS", "0")
        runtime.reset()
        receiver.fail_with = [500] * schedule["failing_callbacks"]
        world = World(fns, factory_env, injector, receiver, schedule["lose_ends"])
        patch.setattr(timefmt, "now", lambda: world.now)
        for number, size in enumerate(schedule["sizes"]):
            records = [{"text": f"t{number}-{i}", "label": "ab"[i % 2]} for i in range(size)]
            path = f"/data/{SCHEDULES_RUN['schedules']}/{number}"
            datasets.expect_request(path).respond_with_handler(Dataset(records))
            world.create(datasets.url_for(path), records)
        world.run()
        world.check()
    runtime.reset()
    report = os.environ.get("AIFACTORY_CRASH_REPORT")
    if report:  # for benchmarks/crash_schedules.py
        with open(report, "w", encoding="utf-8") as handle:
            json.dump({"schedules": SCHEDULES_RUN["schedules"], "reached": REACHED}, handle)
