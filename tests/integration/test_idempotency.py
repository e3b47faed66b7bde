"""Idempotent create: a retried create with the same Idempotency-Key gets the first answer and
creates nothing, per owner, for 24 hours."""

import json
import threading
import uuid

import pytest

from tests.integration.flow import seed_request
from tests.support import Context, api_event, load_function


def create_with_key(fn, body, key, key_id="examplekeyid1"):
    event = api_event("create_training_job", body, key_id)
    if key is not None:
        event["headers"]["Idempotency-Key"] = key
        event["multiValueHeaders"]["Idempotency-Key"] = [key]
    response = fn.lambda_handler(event, Context())
    return response["statusCode"], json.loads(response["body"])


def jobs_of(aws, factory_env, owner):
    items = aws.dynamodb.Table(factory_env["JOBS_TABLE"]).scan()["Items"]
    return sorted(item["job_name"] for item in items if item["owner"] == owner)


def staging_messages(aws, factory_env):
    found = aws.sqs.receive_message(
        QueueUrl=factory_env["STAGE_QUEUE_URL"], MaxNumberOfMessages=10, VisibilityTimeout=0
    ).get("Messages", [])
    return [json.loads(m["Body"])["job_name"] for m in found]


@pytest.fixture
def owner() -> str:
    return f"key-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def body(callbacks, httpserver):
    return seed_request(httpserver.url_for("/data"), callbacks.url)


def test_a_retried_create_gets_the_first_answer_and_creates_nothing(
    fns, aws, factory_env, owner, body
):
    # Given a create that succeeded with a key
    first = create_with_key(fns["create_training_job"], body, "order-42", owner)
    assert first[0] == 200
    # When the client retries it with the same key and body (keys in another order)
    again = create_with_key(
        fns["create_training_job"], dict(reversed(body.items())), "order-42", owner
    )
    # Then it gets the same answer, and there is still one job with one staging message
    assert again == first
    assert jobs_of(aws, factory_env, owner) == [first[1]["job_name"]]
    assert staging_messages(aws, factory_env) == [first[1]["job_name"]]


def test_the_same_key_with_another_body_is_a_conflict_naming_the_header(
    fns, aws, factory_env, owner, body
):
    assert create_with_key(fns["create_training_job"], body, "order-43", owner)[0] == 200
    other = {**body, "creator": "someone else"}
    status, answer = create_with_key(fns["create_training_job"], other, "order-43", owner)
    assert status == 409
    assert answer["status"] == "error"
    assert answer["message"].startswith("Idempotency-Key:")
    assert len(jobs_of(aws, factory_env, owner)) == 1


def test_keys_are_scoped_to_the_owner(fns, aws, factory_env, owner, body):
    a = create_with_key(fns["create_training_job"], body, "shared-key", owner)
    b = create_with_key(fns["create_training_job"], body, "shared-key", owner + "-b")
    assert a[0] == b[0] == 200
    assert a[1]["job_name"] != b[1]["job_name"]


def test_without_the_header_every_create_makes_a_job(fns, aws, factory_env, owner, body):
    a = create_with_key(fns["create_training_job"], body, None, owner)
    b = create_with_key(fns["create_training_job"], body, None, owner)
    assert a[0] == b[0] == 200
    assert len(set(jobs_of(aws, factory_env, owner))) == 2


@pytest.mark.parametrize(
    "key",
    ["", " ", "x" * 256, "tab\there", "new\nline", "caf\u00e9", "nul\x00", "\x7f"],
)
def test_a_malformed_key_is_refused_naming_the_header(fns, aws, factory_env, owner, body, key):
    status, answer = create_with_key(fns["create_training_job"], body, key, owner)
    assert status == 400
    assert answer["status"] == "error"
    assert answer["message"].startswith("Idempotency-Key:")
    assert jobs_of(aws, factory_env, owner) == []


def test_a_key_of_255_printable_characters_is_accepted(fns, aws, factory_env, owner, body):
    key = ("A-z 0~" * 50)[:255]
    assert create_with_key(fns["create_training_job"], body, key, owner)[0] == 200


def test_five_concurrent_identical_creates_make_one_job(fns, aws, factory_env, owner, body):
    # Given five Lambda containers (each its own handler instance) and one request
    handlers = [load_function("create_training_job") for _ in range(5)]
    start = threading.Barrier(5)
    answers: list[tuple[int, dict]] = []

    def client(handler):
        start.wait()
        answers.append(create_with_key(handler, body, "concurrent-1", owner))

    # When the five requests arrive at once
    threads = [threading.Thread(target=client, args=(h,)) for h in handlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then one job exists, and every client was told its name
    [job] = jobs_of(aws, factory_env, owner)
    assert [status for status, _ in answers] == [200] * 5, answers
    assert {answer["job_name"] for _, answer in answers} == {job}
