"""The seed's example request, end to end: create, stage several pages, train, call back."""

import hashlib
import json
import os
import re
from datetime import datetime, timedelta

import requests

from tests.integration.flow import (
    Dataset,
    call,
    complete,
    manifest_of,
    notify,
    seed_request,
    stage_pending,
    staged_data,
    staged_job,
)
from tests.support import tar_gz

JOB_NAME = re.compile(r"^sage-maker-train-\d{8}-\d{6}-[0-9a-f]{6}$")
SEED_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
RECORDS = [{"tokens": ["book", f"flight-{i}"], "tags": ["O", "B-item"]} for i in range(250)]
REPORT = {
    "avg": {"recall": 0.5712, "f1-score": 0.5549, "support": 5183, "precision": 0.5401},
    "details": [
        {"recall": 0.79, "f1-score": 0.734, "support": 3189, "precision": 0.6666, "no": "0"},
        {"recall": 0.0, "f1-score": 0.0, "support": 16.0, "precision": 0.0, "no": "2"},
    ],
}


def test_seed_request_trains_and_calls_back_with_the_seed_object(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a dataset endpoint with 250 records (pages of 100, 100 and a short 50)
    dataset = Dataset(RECORDS)
    httpserver.expect_request("/v1/ml/datasets/fetch", method="POST").respond_with_handler(dataset)
    body = seed_request(httpserver.url_for("/v1/ml/datasets/fetch"), callbacks.url)

    # When the client sends the seed's request
    status, answer, _ = call(fns, "create_training_job", body)

    # Then it is accepted at once, with a job name in the documented format
    assert status == 200
    assert answer["status"] == "success"
    job = answer["job_name"]
    assert JOB_NAME.match(job) and len(job) <= 63
    assert dataset.calls == []  # nothing fetched on the request path
    status, answer, _ = call(fns, "check_training_status", {"job_name": job})
    assert (status, answer["status"], answer["secondary_status"]) == (200, "InProgress", "Staging")

    # When staging runs
    assert stage_pending(fns, aws, factory_env) == [job]

    # Then the endpoint was paged with the seed's form contract and the client's headers
    # (pages are fetched concurrently; the short page at offset 200 ends the dataset)
    assert sorted((c["offset"], c["page_size"]) for c in dataset.calls)[:3] == [
        (0, 100),
        (100, 100),
        (200, 100),
    ]
    assert all(c["headers"]["X-Api-Key"] == "dataset-secret-example" for c in dataset.calls)
    # and the records sit in S3 as JSON Lines, with a manifest beside them
    bucket = factory_env["DATA_BUCKET"]
    data = staged_data(aws, factory_env, job)
    assert [json.loads(line) for line in data.splitlines()] == RECORDS
    manifest = manifest_of(aws, factory_env, job)
    assert (manifest["records"], manifest["pages"], manifest["bytes"]) == (250, 3, len(data))
    [shard] = manifest["shards"]
    assert shard == {
        "key": f"datasets/{job}/train/part-00000.jsonl",
        "records": 250,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert (manifest["job_name"], manifest["method"], manifest["format"]) == (
        job,
        "POST",
        "application/jsonlines",
    )
    assert (manifest["retries"], manifest["continuations"]) == (0, 0)
    assert manifest["source_url"] == httpserver.url_for("/v1/ml/datasets/fetch")
    # staged after the job was created (its name's UTC stamp), in the seed's time format
    stamp = re.search(r"-(\d{8})-(\d{6})-", job)
    assert stamp is not None
    created = datetime.strptime("".join(stamp.groups()), "%Y%m%d%H%M%S")
    staged = datetime.strptime(manifest["staged_at"], "%Y-%m-%d %H:%M:%S")
    assert timedelta(0) <= staged - created < timedelta(minutes=1)
    assert "dataset-secret-example" not in json.dumps(manifest)

    # and SageMaker was asked to train with the request's image, hyperparameters and resources
    described = aws.sagemaker.describe_training_job(TrainingJobName=job)
    assert described["AlgorithmSpecification"] == {
        "TrainingImage": body["training_model"]["image"],
        "TrainingInputMode": "File",
        # the trainers print the report's avg row in this form; SageMaker keeps it as a metric
        "MetricDefinitions": [
            {"Name": "test:dcg", "Regex": "#quality_metric: host=\\S+, test dcg <score>=(\\S+)"}
        ],
    }
    assert described["HyperParameters"] == body["training_model"]["hyperparameters"]
    assert described["ResourceConfig"] == {
        "InstanceType": "ml.m4.4xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 5,
    }
    assert described["InputDataConfig"] == [
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"s3://{bucket}/datasets/{job}/train/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "ContentType": "application/jsonlines",
        }
    ]
    assert described["OutputDataConfig"] == {
        "S3OutputPath": f"s3://{bucket}/models/",
        "KmsKeyId": factory_env["KMS_KEY_ID"],
    }
    assert described["StoppingCondition"]["MaxRuntimeInSeconds"] == int(
        factory_env["MAX_RUNTIME_SECONDS"]
    )
    assert described["RoleArn"] == factory_env["SAGEMAKER_ROLE_ARN"]
    tags = {
        t["Key"]: t["Value"]
        for t in aws.sagemaker.list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]
    }
    assert tags == {
        "aifactory:managed": "true",
        "aifactory:owner": "examplekeyid1",
        "aifactory:task_def": "ml_tagger",
        "aifactory:creator": "thaiph",
        # the job's name, by which SageMaker's events find it also when AWS Batch named the
        # training job
        "aifactory:job": job,
    }
    assert "secret" not in json.dumps(described, default=str)

    # When training writes its artifacts (the report in output.tar.gz) and SageMaker says so
    model = tar_gz({"model.npz": b"weights"})
    aws.s3.put_object(Bucket=bucket, Key=f"models/{job}/output/model.tar.gz", Body=model)
    aws.s3.put_object(
        Bucket=bucket,
        Key=f"models/{job}/output/output.tar.gz",
        Body=tar_gz({"evaluation.json": json.dumps(REPORT).encode()}),
    )
    notify(fns, "notify_inprogress.json", job, SecondaryStatus="Training")
    assert (
        call(fns, "check_training_status", {"job_name": job})[1]["secondary_status"] == "Training"
    )
    notify(
        fns,
        "notify_completed.json",
        job,
        ModelArtifacts={"S3ModelArtifacts": f"s3://{bucket}/models/{job}/output/model.tar.gz"},
    )

    # Then exactly one callback arrives, with the client's headers and the seed's object
    assert len(callbacks.received) == 1
    received = callbacks.received[0]
    assert received.headers["x-api-key"] == "callback-secret-example"
    callback = received.json
    seed_fields = {
        "status",
        "TrainingEndTime",
        "CreationTime",
        "job_name",
        "model",
        "task_def",
        "creator",
        "log",
    }
    assert seed_fields <= set(callback)
    assert callback["status"] == "Completed"
    assert callback["job_name"] == job
    assert (callback["task_def"], callback["creator"]) == ("ml_tagger", "thaiph")
    assert SEED_TIME.match(callback["TrainingEndTime"]) and SEED_TIME.match(
        callback["CreationTime"]
    )
    assert callback["log"] == {
        "avg": {"recall": "0.57", "f1-score": "0.55", "support": "5183", "precision": "0.54"},
        "details": [
            {
                "recall": "0.79",
                "f1-score": "0.73",
                "support": "3189",
                "precision": "0.67",
                "no": "0",
            },
            {"recall": "0.00", "f1-score": "0.00", "support": "16", "precision": "0.00", "no": "2"},
        ],
    }
    assert callback["model_s3_uri"] == f"s3://{bucket}/models/{job}/output/model.tar.gz"
    # and the model link downloads the model
    assert requests.get(callback["model"], timeout=10).content == model

    # and the job is listed as Completed with its end time
    status, listed, _ = call(fns, "check_trained_job", {})
    entry = next(j for j in listed if j["TrainingJobName"] == job)
    assert entry["TrainingJobStatus"] == "Completed"
    assert entry["CreationTime"] == callback["CreationTime"]
    assert SEED_TIME.match(entry["TrainingEndTime"])
    # and the record says the callback was delivered
    item = aws.dynamodb.Table(factory_env["JOBS_TABLE"]).get_item(Key={"job_name": job})["Item"]
    assert item["callback_state"] == "delivered"
    assert b"callback-secret-example" not in bytes(item["secrets"].value)
    # and check_training_status shows the same report, now that the job has ended
    assert call(fns, "check_training_status", {"job_name": job})[1]["report"] == callback["log"]


def test_model_tar_report_is_used_when_output_tar_has_none(
    fns, aws, factory_env, callbacks, httpserver
):
    # Given a job whose image wrote a scikit-learn report into /opt/ml/model only
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    sklearn = {
        "B-city": {"precision": 0.9, "recall": 0.8, "f1-score": 0.847, "support": 10},
        "O": {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 90},
        "accuracy": 0.98,
        "macro avg": {"precision": 0.95, "recall": 0.9, "f1-score": 0.92, "support": 100},
        "weighted avg": {"precision": 0.991, "recall": 0.98, "f1-score": 0.985, "support": 100},
    }
    model = {"model/weights.bin": b"x" * 1000, "evaluation.json": json.dumps(sklearn).encode()}
    # When it completes
    complete(
        fns,
        aws,
        factory_env,
        job,
        {"model.tar.gz": tar_gz(model), "output.tar.gz": tar_gz({})},
    )
    # Then the callback carries the report in the seed's shape
    log = callbacks.received[0].json["log"]
    assert log["avg"] == {
        "precision": "0.99",
        "recall": "0.98",
        "f1-score": "0.98",
        "support": "100",
    }
    assert [row["no"] for row in log["details"]] == ["B-city", "O"]
    assert log["details"][0]["f1-score"] == "0.85"


def test_missing_report_sends_the_callback_with_a_null_log(
    fns, aws, factory_env, callbacks, httpserver
):
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    complete(fns, aws, factory_env, job, {"model.tar.gz": tar_gz({"w": b"1"})})
    callback = callbacks.received[0].json
    assert callback["status"] == "Completed"
    assert callback["log"] is None
    assert callback["model"].startswith("http")
    # and the ended job's status says it has no report
    assert call(fns, "check_training_status", {"job_name": job})[1]["report"] is None


def test_report_scan_gives_up_on_a_large_model(
    fns, aws, factory_env, callbacks, httpserver, settings_override
):
    # Given a model.tar.gz whose report sits behind more bytes than the scan bound
    settings_override(REPORT_SCAN_MAX_BYTES="65536")
    job = staged_job(fns, aws, factory_env, callbacks, httpserver)
    weights = os.urandom(512 * 1024)
    model = {"weights.bin": weights, "evaluation.json": json.dumps(REPORT).encode()}
    # When it completes
    complete(fns, aws, factory_env, job, {"model.tar.gz": tar_gz(model)})
    # Then the callback is still sent, without a log
    callback = callbacks.received[0].json
    assert callback["log"] is None and callback["model"]
