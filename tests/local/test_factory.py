"""End to end through the local Factory: API Gateway stand-in, queues, the deployed handlers,
the local SageMaker runtime with the reference trainers, and the client's callback."""

import base64
import io
import json
import re
import tarfile
import time
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from aifactory_local.callback_receiver import verify as verify_signature
from aifactory_local.factory import LocalFactory
from aifactory_local.provision import ACCOUNT_ID
from aifactory_local.sample_data import tagging_records
from tests.local.conftest import (
    CALLBACK_SECRET,
    Client,
    ended_training_job,
    job_dir,
    training_job_name,
)

pytestmark = pytest.mark.e2e

METRIC = re.compile(r"^\d\.\d\d$")
SUPPORT = re.compile(r"^\d+$")
ROUTES = ("create_training_job", "check_trained_job", "stop_training_job", "check_training_status")
SLOT_TAGGER_IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:slot_tagger"
NO_TRAINER_IMAGE = (
    f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/chappieai-sagemaker:no_such_trainer"
)


def _assert_seed_row(row: dict[str, Any]) -> None:
    for name in ("precision", "recall", "f1-score"):
        assert METRIC.match(row[name]), row
    assert SUPPORT.match(row["support"]), row


def _job_item(factory: LocalFactory, job_name: str) -> dict[str, Any]:
    item = factory.client("dynamodb").get_item(
        TableName=factory.table, Key={"job_name": {"S": job_name}}, ConsistentRead=True
    )["Item"]
    return {k: next(iter(v.values())) for k, v in item.items()}


def _delivered(factory: LocalFactory, job_name: str) -> dict[str, Any]:
    """The job record once it says the callback was delivered (written after the POST)."""
    deadline = time.monotonic() + 10
    while (item := _job_item(factory, job_name)).get("callback_state") != "delivered":
        assert time.monotonic() < deadline, item
        time.sleep(0.1)
    return item


def test_a_job_runs_to_a_completed_callback_with_real_metrics(
    factory: LocalFactory, alice: Client, payload: Any, receiver: Any
) -> None:
    # Given the seed's request, pointed at a dataset endpoint of tagging sentences
    job_name = alice.create(payload())

    # When the job is followed to its end
    final = alice.wait_terminal(job_name)

    # Then it completed, and its one callback carries a model link and the evaluation report
    assert (final["status"], final["secondary_status"]) == ("Completed", "Completed"), final
    assert final["training_end_time"] and final["failure_reason"] is None
    callback = receiver.wait_for_job(job_name, timeout=30)
    assert callback is not None
    assert callback.headers.get("x-api-key") == CALLBACK_SECRET
    body = callback.json
    assert body["status"] == "Completed"
    assert body["job_name"] == job_name
    assert (body["task_def"], body["creator"]) == ("ml_tagger", "thaiph")
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", body["TrainingEndTime"])
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", body["CreationTime"])
    log = body["log"]
    _assert_seed_row(log["avg"])
    assert float(log["avg"]["f1-score"]) > 0.5  # the model learned something
    assert {row["no"] for row in log["details"]} >= {"O", "CITY", "PERSON", "MONTH"}
    for row in log["details"]:
        _assert_seed_row(row)
    assert sum(int(r["support"]) for r in log["details"]) == int(log["avg"]["support"])

    # and the model link downloads the model archive
    model = requests.get(body["model"], timeout=30)
    assert model.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(model.content), mode="r:gz") as archive:
        assert archive.getnames()

    # and the bucket holds the staged dataset and both SageMaker archives
    s3 = factory.client("s3")
    manifest_key = f"datasets/{job_name}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=factory.bucket, Key=manifest_key)["Body"].read())
    assert manifest["records"] == 600
    # (under the training job's name, which AWS Batch chose: AWSBatch<job name><hash>)
    training = training_job_name(factory, job_name)
    assert training.startswith(f"AWSBatch{job_name}")
    keys = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket=factory.bucket, Prefix=f"models/{training}/")["Contents"]
    }
    assert keys == {
        f"models/{training}/output/model.tar.gz",
        f"models/{training}/output/output.tar.gz",
    }
    # and the job ran in a SageMaker tree under the state dir
    root = job_dir(factory, job_name) / "opt" / "ml"
    hyperparameters = json.loads((root / "input/config/hyperparameters.json").read_text())
    assert hyperparameters["process.train.steps"] == "400"
    assert (root / "output/data/evaluation.json").is_file()

    # and the listing shows it finished; the record says the callback was delivered once
    listed = alice.post("check_trained_job", {}).json()
    entry = next(j for j in listed if j["TrainingJobName"] == job_name)
    assert entry["TrainingJobStatus"] == "Completed" and entry["TrainingEndTime"]
    assert int(_delivered(factory, job_name)["callback_attempts"]) == 1
    assert len(receiver.for_job(job_name)) == 1


def test_a_dataset_the_trainer_rejects_ends_failed_with_the_reason_in_the_callback(
    alice: Client, payload: Any, bad_dataset: Any, receiver: Any
) -> None:
    # Given a dataset with a record that has no tags
    job_name = alice.create(payload(dataset=bad_dataset))

    # When the trainer reads it
    final = alice.wait_terminal(job_name)

    # Then the job failed with the trainer's own words, in the status and in the callback
    assert final["status"] == "Failed"
    assert 'no "tags" field' in final["failure_reason"]
    callback = receiver.wait_for_job(job_name, timeout=30)
    assert callback is not None
    body = callback.json
    assert body["status"] == "Failed"
    assert 'no "tags" field' in body["failure_reason"]
    assert body["failure_reason"].startswith("AlgorithmError: ")
    assert body["log"] is None and body["model"] is None


def test_a_stop_mid_training_ends_the_job_stopped_with_its_callback(
    factory: LocalFactory, alice: Client, payload: Any, receiver: Any
) -> None:
    # Given a job that trains for a long time
    job_name = alice.create(payload(**{"process.train.steps": "5000000"}))
    alice.wait(job_name, lambda s: s["secondary_status"] == "Training", timeout=30)

    # When its owner stops it
    response = alice.post("stop_training_job", {"job_name": job_name})

    # Then the stop is accepted, the trainer gets SIGTERM, and the job ends Stopped
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "job_name": job_name}
    assert alice.status(job_name)["status"] in ("Stopping", "Stopped")
    final = alice.wait_terminal(job_name, timeout=30)
    assert final["status"] == "Stopped"
    callback = receiver.wait_for_job(job_name, timeout=30)
    assert callback is not None and callback.json["status"] == "Stopped"
    training_log = (job_dir(factory, job_name) / "training.log").read_text()
    assert "SIGTERM" in training_log and "[exit status 143]" in training_log

    # and stopping it again is refused: the job is over
    again = alice.post("stop_training_job", {"job_name": job_name})
    assert again.status_code == 409
    assert "Stopped" in again.json()["message"]


def test_an_image_without_a_trainer_fails_with_a_reason_saying_so(
    alice: Client, payload: Any, receiver: Any
) -> None:
    job_name = alice.create(payload(image=NO_TRAINER_IMAGE))

    final = alice.wait_terminal(job_name)

    assert final["status"] == "Failed"
    assert "no trainer for image" in final["failure_reason"]
    callback = receiver.wait_for_job(job_name, timeout=30)
    assert callback is not None and "no trainer for image" in callback.json["failure_reason"]


def test_a_trainer_mapped_to_an_image_runs_and_its_sklearn_report_in_model_is_used(
    alice: Client, payload: Any, receiver: Any
) -> None:
    # Given an image mapped to a command (--trainer '*:sklearn_report=python fake_trainer.py')
    image = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/custom:sklearn_report"
    job_name = alice.create(payload(image=image))

    # When it has run
    final = alice.wait_terminal(job_name)

    # Then its report, written to model/ in scikit-learn's shape, is the callback's log
    assert final["status"] == "Completed", final
    callback = receiver.wait_for_job(job_name, timeout=30)
    assert callback is not None
    log = callback.json["log"]
    assert log["avg"] == {
        "precision": "0.75",
        "recall": "0.50",
        "f1-score": "0.60",
        "support": "608",
    }
    assert [row["no"] for row in log["details"]] == ["yes", "no"]
    assert log["details"][0]["f1-score"] == "0.33"
    model = requests.get(callback.json["model"], timeout=30)
    with tarfile.open(fileobj=io.BytesIO(model.content), mode="r:gz") as archive:
        member = archive.extractfile("seen.json")
        assert member is not None
        seen = json.loads(member.read())
    assert seen["records"] == 600 and seen["channels"] == ["train"]
    assert seen["hp"]["model.embeddingSize"] == "50"


def test_two_api_keys_cannot_see_each_others_jobs(
    alice: Client, bob: Client, payload: Any, receiver: Any
) -> None:
    # Given a job of Alice's
    job_name = alice.create(payload(image=NO_TRAINER_IMAGE))
    alice.wait_terminal(job_name)

    # When Bob asks about it or tries to stop it, it does not exist for him
    for route in ("check_training_status", "stop_training_job"):
        response = bob.post(route, {"job_name": job_name})
        assert response.status_code == 404, (route, response.text)
        assert response.json()["status"] == "error"
        assert job_name in response.json()["message"]
    # and his listing shows only his own jobs, while Alice's shows hers
    assert job_name not in {j["TrainingJobName"] for j in bob.post("check_trained_job").json()}
    alices = [j["TrainingJobName"] for j in alice.post("check_trained_job").json()]
    assert job_name in alices and len(alices) >= 2
    # (newest first, in pages whose continuation token comes in the X-Next-Token header)
    first = alice.post("check_trained_job", {"limit": 1})
    assert [j["TrainingJobName"] for j in first.json()] == alices[:1]
    token = first.headers["X-Next-Token"]
    second = alice.post("check_trained_job", {"limit": 1, "next_token": token})
    assert [j["TrainingJobName"] for j in second.json()] == alices[1:2]
    assert bob.post("check_trained_job", {"next_token": token}).status_code == 400
    bobs = bob.create(payload(image=NO_TRAINER_IMAGE))
    assert [j["TrainingJobName"] for j in bob.post("check_trained_job").json()] == [bobs]
    assert alice.post("check_training_status", {"job_name": bobs}).status_code == 404
    assert receiver.wait_for_job(bobs, timeout=30) is not None


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_requests_without_a_known_api_key_are_refused_as_api_gateway_does(
    factory: LocalFactory, key: str | None
) -> None:
    client = Client(factory.api_url, key)
    for route in ROUTES:
        response = client.post(route, {"job_name": "sage-maker-train-20260101-000000-abcdef"})
        assert response.status_code == 403
        assert response.json() == {"message": "Forbidden"}


def test_unknown_routes_and_methods_get_api_gateways_missing_token_answer(
    factory: LocalFactory, alice: Client
) -> None:
    for method, path in (("POST", "/nope"), ("GET", "/check_trained_job")):
        response = alice.session.request(method, f"{factory.api_url}{path}", timeout=10)
        assert response.status_code == 403
        assert response.json()["message"] == "Missing Authentication Token"
        assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    # The stage prefix of the execute-api URL is accepted as well
    assert alice.session.post(f"{factory.api_url}/prod/check_trained_job", timeout=10).ok


@pytest.mark.parametrize(
    ("method", "path", "hint"),
    [
        (
            "POST",
            "/create_trainig_job",
            "no route POST /create_trainig_job; did you mean POST /create_training_job?",
        ),
        (
            "POST",
            "/prod/check_training_stats",
            "no route POST /check_training_stats; did you mean POST /check_training_status?",
        ),
        (
            "GET",
            "/check_trained_job",
            "no route GET /check_trained_job; /check_trained_job takes POST",
        ),
        ("POST", "/xyz", "no route POST /xyz; GET /openapi.json lists the routes"),
    ],
    ids=["typo", "typo-with-stage", "wrong-method", "nothing-near"],
)
def test_a_mistyped_route_keeps_api_gateways_answer_and_locally_names_the_nearest_route(
    factory: LocalFactory, alice: Client, method: str, path: str, hint: str
) -> None:
    # When a client mistypes a route
    response = alice.session.request(method, f"{factory.api_url}{path}", timeout=10)
    # Then the answer is API Gateway's, and it names the route that was probably meant
    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token", "hint": hint}


def test_only_the_consoles_get_routes_answer_without_a_key_with_their_path_parameter(
    factory: LocalFactory,
) -> None:
    # The template's ApiKeyRequired: false routes, and {asset} as one path segment
    anonymous = requests.Session()
    for path in ("/console", "/prod/console", "/console/console.js", "/prod/console/console.css"):
        response = anonymous.get(f"{factory.api_url}{path}", timeout=10)
        assert response.status_code == 200, path
        assert "Content-Security-Policy" in response.headers
    # Another method, or a deeper path, is no route at all
    for method, path in (("POST", "/console"), ("GET", "/console/a/b"), ("GET", "/console/")):
        response = anonymous.request(method, f"{factory.api_url}{path}", timeout=10)
        assert response.status_code == 403, (method, path)
        assert response.json()["message"] == "Missing Authentication Token"
    # And every data route still wants its key
    assert anonymous.post(f"{factory.api_url}/check_trained_job", timeout=10).status_code == 403


def test_a_failed_callback_delivery_is_retried(
    factory: LocalFactory, alice: Client, payload: Any, receiver: Any
) -> None:
    # Given a callback receiver that fails its next request
    receiver.fail_with.append(500)

    # When a job ends
    job_name = alice.create(payload(image=NO_TRAINER_IMAGE))
    alice.wait_terminal(job_name)

    # Then the callback is delivered again through the retry queue
    delivered = receiver.wait_for(
        lambda c: c.json.get("job_name") == job_name and len(receiver.for_job(job_name)) >= 2,
        timeout=30,
    )
    assert delivered is not None
    first, second = receiver.for_job(job_name)[:2]
    assert first.json == second.json
    item = _delivered(factory, job_name)
    assert int(item["callback_attempts"]) == 2


def test_the_sagemaker_stand_in_speaks_sagemakers_protocol(
    factory: LocalFactory, alice: Client, payload: Any
) -> None:
    sagemaker = factory.client("sagemaker")
    job_name = alice.create(payload(image=NO_TRAINER_IMAGE))
    alice.wait_terminal(job_name)
    job_name = training_job_name(factory, job_name)  # as AWS Batch named it

    described = sagemaker.describe_training_job(TrainingJobName=job_name)
    assert described["TrainingJobStatus"] == "Failed"
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == ["Starting", "Failed"]
    listed = sagemaker.list_training_jobs(NameContains=job_name)["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in listed] == [job_name]
    with pytest.raises(ClientError) as stopped:
        sagemaker.stop_training_job(TrainingJobName=job_name)
    assert stopped.value.response["Error"]["Code"] == "ValidationException"
    assert "is in status Failed" in stopped.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as missing:
        sagemaker.describe_training_job(TrainingJobName="sage-maker-train-none")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFound"
    with pytest.raises(ClientError) as duplicate:
        sagemaker.create_training_job(
            TrainingJobName=job_name,
            AlgorithmSpecification={"TrainingImage": NO_TRAINER_IMAGE, "TrainingInputMode": "File"},
            RoleArn="arn:aws:iam::123456789012:role/r",
            OutputDataConfig={"S3OutputPath": f"s3://{factory.bucket}/models/"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            StoppingCondition={"MaxRuntimeInSeconds": 60},
        )
    assert duplicate.value.response["Error"]["Code"] == "ResourceInUse"


def test_a_job_past_its_max_runtime_is_stopped_as_sagemaker_does(factory: LocalFactory) -> None:
    # Given staged data and a job that would train far longer than its MaxRuntimeInSeconds
    s3 = factory.client("s3")
    lines = "".join(json.dumps(r) + "\n" for r in tagging_records(100))
    s3.put_object(Bucket=factory.bucket, Key="datasets/direct/train/data.jsonl", Body=lines)
    sagemaker = factory.client("sagemaker")
    sagemaker.create_training_job(
        TrainingJobName="direct-max-runtime",
        AlgorithmSpecification={"TrainingImage": SLOT_TAGGER_IMAGE, "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/r",
        HyperParameters={"process.train.steps": "5000000"},
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{factory.bucket}/datasets/direct/train/",
                    }
                },
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{factory.bucket}/models/"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 1},
    )

    # When it runs, Then it is stopped once its time is up
    job = ended_training_job(sagemaker, "direct-max-runtime")
    assert job["TrainingJobStatus"] == "Stopped", job
    assert job["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "MaxRuntimeExceeded",
    ]


# -- signed callbacks, replay and the reconciler under the local Factory ----------------------
SIGNING_SECRET = "whsec_" + base64.b64encode(b"local-signing-key-0123456789").decode()


def test_a_signed_job_is_verified_and_replayed_through_the_local_api(
    factory: LocalFactory, alice: Client, payload: Any, receiver: Any
) -> None:
    # Given a job created with a signing secret, which ends
    body = payload(image=NO_TRAINER_IMAGE)
    body["callback_url"]["signing_secret"] = SIGNING_SECRET
    job_name = alice.create(body)
    alice.wait_terminal(job_name)
    first = receiver.wait_for_job(job_name, timeout=30)
    assert first is not None and verify_signature(first, SIGNING_SECRET)[0]
    # When the client asks for it again through the local API
    response = alice.post("redeliver_callback", {"job_name": job_name})
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted", "job_name": job_name}
    # Then a second, freshly signed delivery arrives with the same webhook-id
    second = receiver.wait_for(lambda c: len(receiver.for_job(job_name)) >= 2, timeout=30)
    assert second is not None
    replayed = receiver.for_job(job_name)[1]
    assert verify_signature(replayed, SIGNING_SECRET)[0]
    assert replayed.headers["webhook-id"] == first.headers["webhook-id"] == f"msg_{job_name}"
    # and the local API serves the other new route too, with the seed's error shape
    no_model = alice.post("get_model_url", {"job_name": job_name})
    assert no_model.status_code == 409 and no_model.json()["status"] == "error"


def test_the_local_factory_runs_the_reconciler_on_a_timer(factory: LocalFactory) -> None:
    assert [timer.function.name for timer in factory.timers] == ["ReconcileFn"]
    assert all(timer.interval <= 60 for timer in factory.timers)
