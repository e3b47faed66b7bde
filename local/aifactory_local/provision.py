"""Create the stack's data resources in an AWS emulator, from template.yaml's definitions,
and return the environment the functions read (the same variables as the template's Globals).
"""

import json
from typing import Any

import boto3

from aifactory_local.template import load_template, resolve, resource

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's account


def _client(service: str, endpoint_url: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _queue(sqs: Any, name: str, logical_id: str, dlq_arn: str | None = None) -> tuple[str, str]:
    props = resource(logical_id).get("Properties", {})
    attributes = {}
    if "VisibilityTimeout" in props:
        attributes["VisibilityTimeout"] = str(resolve(props["VisibilityTimeout"]))
    if "MessageRetentionPeriod" in props:
        attributes["MessageRetentionPeriod"] = str(resolve(props["MessageRetentionPeriod"]))
    redrive = props.get("RedrivePolicy")
    if redrive and dlq_arn:
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": int(resolve(redrive["maxReceiveCount"])),
            }
        )
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def _table(endpoint_url: str, logical_id: str, name: str, template: dict[str, Any]) -> str:
    """Create a DynamoDB table keyed (and indexed) as the template's resource says."""
    props = resource(logical_id, template)["Properties"]
    args: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = [
            {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
            for index in props["GlobalSecondaryIndexes"]
        ]
    _client("dynamodb", endpoint_url).create_table(**args)
    return name


def owner_counts_table(
    endpoint_url: str, prefix: str = "aifactory", template: dict[str, Any] | None = None
) -> str:
    """Create the table of each owner's count of active jobs, keyed as the template says."""
    return _table(
        endpoint_url, "OwnerCountsTable", f"{prefix}-owner-counts", template or load_template()
    )


def provision(endpoint_url: str, prefix: str = "aifactory") -> dict[str, str]:
    """Create key, bucket, table and queues; return the functions' environment variables."""
    template = load_template()
    kms = _client("kms", endpoint_url)
    key_id = kms.create_key(Description="AI Factory (local)")["KeyMetadata"]["KeyId"]

    bucket = f"{prefix}-data-{ACCOUNT_ID}"
    _client("s3", endpoint_url).create_bucket(Bucket=bucket)

    table_name = _table(endpoint_url, "JobsTable", f"{prefix}-jobs", template)
    # Powertools Idempotency's table, keyed and expiring as the template says.
    idempotency_table = _table(endpoint_url, "IdempotencyTable", f"{prefix}-idempotency", template)

    counts_table = owner_counts_table(endpoint_url, prefix, template)

    sqs = _client("sqs", endpoint_url)
    stage_dlq_url, stage_dlq_arn = _queue(sqs, f"{prefix}-stage-dlq", "StageDLQ")
    stage_url, _ = _queue(sqs, f"{prefix}-stage", "StageQueue", stage_dlq_arn)
    callback_dlq_url, callback_dlq_arn = _queue(sqs, f"{prefix}-callback-dlq", "CallbackDLQ")
    retry_url, _ = _queue(sqs, f"{prefix}-callback-retry", "CallbackRetryQueue", callback_dlq_arn)

    return {
        "JOBS_TABLE": table_name,
        "OWNER_COUNTS_TABLE": counts_table,
        "DATA_BUCKET": bucket,
        "STAGE_QUEUE_URL": stage_url,
        "CALLBACK_RETRY_QUEUE_URL": retry_url,
        "CALLBACK_DLQ_URL": callback_dlq_url,
        "STAGE_DLQ_URL": stage_dlq_url,
        "KMS_KEY_ID": key_id,
        "SAGEMAKER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT_ID}:role/aifactory-sagemaker",
        "ALLOWED_IMAGE_PREFIXES": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/",
        "MAX_INSTANCE_COUNT": str(resolve({"Ref": "MaxInstanceCount"}, template)),
        "MAX_VOLUME_SIZE_GB": str(resolve({"Ref": "MaxVolumeSizeGB"}, template)),
        "MAX_RUNTIME_SECONDS": str(resolve({"Ref": "MaxRuntimeSeconds"}, template)),
        "MAX_PAGES_CAP": str(resolve({"Ref": "MaxPagesCap"}, template)),
        "CALLBACK_MAX_ATTEMPTS": str(resolve({"Ref": "CallbackMaxAttempts"}, template)),
        "CALLBACK_RETRY_BASE_SECONDS": str(resolve({"Ref": "CallbackRetryBaseSeconds"}, template)),
        "PRESIGN_EXPIRES_SECONDS": str(resolve({"Ref": "PresignExpiresSeconds"}, template)),
        "ALLOW_PRIVATE_URLS": "false",
        "IDEMPOTENCY_TABLE": idempotency_table,
        "CALLBACK_RETRY_CAP_SECONDS": str(resolve({"Ref": "CallbackRetryCapSeconds"}, template)),
        "CALLBACK_RETRY_WINDOW_SECONDS": str(
            resolve({"Ref": "CallbackRetryWindowSeconds"}, template)
        ),
    }
