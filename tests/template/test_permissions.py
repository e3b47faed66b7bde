"""Least privilege: each role may do exactly what its code needs, on exactly its resources."""

from typing import Any

import pytest

from tests.template.cfn import (
    FUNCTIONS,
    actions,
    as_list,
    managed_policy_names,
    policy_documents,
    render,
    role_permissions,
    statements,
    statements_with_action,
)

pytestmark = pytest.mark.template

TABLE = "${JobsTable.Arn}"
COUNTS = "${OwnerCountsTable.Arn}"
KEY = "${FactoryKey.Arn}"
DATASETS = "${DataBucket.Arn}/datasets/*"
MODELS = "${DataBucket.Arn}/models/*"
CHECKPOINTS = "${DataBucket.Arn}/checkpoints/*"
BUCKET = "${DataBucket.Arn}"
TRAINING_JOBS = (
    "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}"
    ":training-job/sage-maker-train-*"
)
# Training jobs AWS Batch started (Scheduler=batch): it names them AWSBatch<job name><hash>.
BATCH_TRAINING_JOBS = (
    "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}"
    ":training-job/AWSBatchsage-maker-train-*"
)
ALL_TRAINING_JOBS = {TRAINING_JOBS, BATCH_TRAINING_JOBS}
# The stack's own training queue (named, so it can be named whichever scheduler is chosen),
# and the service jobs in it.
JOB_QUEUE = (
    "arn:${AWS::Partition}:batch:${AWS::Region}:${AWS::AccountId}"
    ":job-queue/${AWS::StackName}-training"
)
SERVICE_JOBS = "arn:${AWS::Partition}:batch:${AWS::Region}:${AWS::AccountId}:service-job/*"
RETRY_QUEUE = "${CallbackRetryQueue.Arn}"
IDEMPOTENCY_TABLE = "${IdempotencyTable.Arn}"
TRAINING_LOG_GROUP = (
    "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
    ":log-group:/aws/sagemaker/TrainingJobs"
)
# API keys, read for their aifactory:tenant tag (the caller's tenant).
API_KEYS = "arn:${AWS::Partition}:apigateway:${AWS::Region}::/apikeys/*"

# Action -> resources, per function. CreateFn's kms:Decrypt is there because SQS verifies a
# new data key with Decrypt when a producer sends to a KMS-encrypted queue; it is allowed
# only through SQS (checked below).
EXPECTED_PERMISSIONS: dict[str, dict[str, set[str]]] = {
    "CreateFn": {
        "apigateway:GET": {API_KEYS},
        "dynamodb:PutItem": {TABLE, IDEMPOTENCY_TABLE},
        "dynamodb:DeleteItem": {TABLE, IDEMPOTENCY_TABLE},
        "sqs:SendMessage": {"${StageQueue.Arn}"},
        "kms:Encrypt": {KEY},
        "kms:GenerateDataKey": {KEY},
        "kms:Decrypt": {KEY},
        # Powertools Idempotency's records, in their own table only; and the owner's count
        # of active jobs, changed in the same transaction as the job record.
        "dynamodb:GetItem": {IDEMPOTENCY_TABLE, COUNTS},
        "dynamodb:UpdateItem": {IDEMPOTENCY_TABLE, COUNTS},
    },
    "ListFn": {
        "apigateway:GET": {API_KEYS},
        # The owner's index and the owner-and-status index, by name: never the table itself.
        "dynamodb:Query": {
            "${JobsTable.Arn}/index/owner-created_at-index",
            "${JobsTable.Arn}/index/owner-status-index",
        },
        # Page tokens only: the statement's condition names their encryption context.
        "kms:Encrypt": {KEY},
        "kms:Decrypt": {KEY},
    },
    "StopFn": {
        "apigateway:GET": {API_KEYS},
        "dynamodb:Query": {TABLE},
        "dynamodb:GetItem": {TABLE},
        "dynamodb:UpdateItem": {TABLE},
        "sagemaker:StopTrainingJob": ALL_TRAINING_JOBS,
        # A job queued in Batch stops without training; one waiting for SageMaker capacity
        # (direct) is ended by a staging message, on the encrypted queue.
        "batch:TerminateServiceJob": {SERVICE_JOBS},
        "sqs:SendMessage": {"${StageQueue.Arn}"},
        "kms:GenerateDataKey": {KEY},
        "kms:Decrypt": {KEY},
    },
    "StatusFn": {
        "apigateway:GET": {API_KEYS},
        # The job, read with the owner as a filter: never another tenant's item.
        "dynamodb:Query": {TABLE},
        # While a job trains: its latest train:step, cached on the job record.
        "dynamodb:UpdateItem": {TABLE},
        "cloudwatch:GetMetricData": {"*"},
    },
    "StageFn": {
        "dynamodb:GetItem": {TABLE},
        "dynamodb:UpdateItem": {TABLE, COUNTS},
        "s3:PutObject": {DATASETS},
        # Reads back a shard written before a crash; deletes a failed or stopped dataset.
        "s3:GetObject": {DATASETS},
        "s3:DeleteObject": {DATASETS},
        "s3:AbortMultipartUpload": {DATASETS},
        "kms:Decrypt": {KEY},
        "kms:Encrypt": {KEY},
        "kms:GenerateDataKey": {KEY},
        "sagemaker:CreateTrainingJob": ALL_TRAINING_JOBS,
        "sagemaker:AddTags": ALL_TRAINING_JOBS,
        "sagemaker:StopTrainingJob": ALL_TRAINING_JOBS,
        "iam:PassRole": {"${SageMakerExecutionRole.Arn}"},
        # Scheduler=batch: the job joins the stack's queue; a stop in flight is passed on; a
        # resubmission Batch refuses finds the first one (no resource-level permissions).
        "batch:SubmitServiceJob": {JOB_QUEUE, SERVICE_JOBS},
        "batch:TerminateServiceJob": {SERVICE_JOBS},
        "batch:ListServiceJobs": {"*"},
        # Callback retries, and staging continuations.
        "sqs:SendMessage": {RETRY_QUEUE, "${StageQueue.Arn}"},
    },
    "NotifyFn": {
        "dynamodb:GetItem": {TABLE},
        "dynamodb:UpdateItem": {TABLE, COUNTS},
        "sagemaker:DescribeTrainingJob": ALL_TRAINING_JOBS,
        "s3:GetObject": {MODELS},
        # A job that ended in the Batch queue leaves nothing staged.
        "s3:DeleteObject": {DATASETS},
        "s3:ListBucket": {BUCKET},
        "kms:Decrypt": {KEY},
        "kms:GenerateDataKey": {KEY},
        # The retry queue, and NotifyDLQ as the on-failure destination of async invocations.
        "sqs:SendMessage": {RETRY_QUEUE, "${NotifyDLQ.Arn}"},
    },
    "RetryFn": {
        "dynamodb:GetItem": {TABLE},
        "dynamodb:UpdateItem": {TABLE},
        "sagemaker:DescribeTrainingJob": ALL_TRAINING_JOBS,
        "s3:GetObject": {MODELS},
        "s3:ListBucket": {BUCKET},
        "kms:Decrypt": {KEY},
        "kms:GenerateDataKey": {KEY},
        "sqs:ChangeMessageVisibility": {RETRY_QUEUE},
        # After the retry window, the last failed attempt's message.
        "sqs:SendMessage": {"${CallbackDLQ.Arn}"},
    },
    "RedeliverFn": {
        "apigateway:GET": {API_KEYS},
        "dynamodb:Query": {TABLE},
        "dynamodb:GetItem": {TABLE},
        "dynamodb:UpdateItem": {TABLE},
        "sqs:SendMessage": {RETRY_QUEUE},
        "kms:GenerateDataKey": {KEY},
        "kms:Decrypt": {KEY},
    },
    "ModelUrlFn": {
        "apigateway:GET": {API_KEYS},
        # The job, read with the owner as a filter: never another tenant's item.
        "dynamodb:Query": {TABLE},
        "sagemaker:DescribeTrainingJob": ALL_TRAINING_JOBS,
        "s3:GetObject": {MODELS},
        "s3:ListBucket": {BUCKET},
        "kms:Decrypt": {KEY},
    },
    "TrainingLogsFn": {
        "apigateway:GET": {API_KEYS},
        # The job, read with the owner as a filter; page tokens sealed with the key.
        "dynamodb:Query": {TABLE},
        "kms:Encrypt": {KEY},
        "kms:Decrypt": {KEY},
        # SageMaker's training log group, and only the streams of the Factory's jobs.
        "logs:DescribeLogStreams": {TRAINING_LOG_GROUP, TRAINING_LOG_GROUP + ":*"},
        "logs:GetLogEvents": {
            TRAINING_LOG_GROUP + ":log-stream:sage-maker-train-*",
            TRAINING_LOG_GROUP + ":log-stream:AWSBatchsage-maker-train-*",
        },
    },
    "TrainingMetricsFn": {
        "apigateway:GET": {API_KEYS},
        "dynamodb:Query": {TABLE},
        "cloudwatch:GetMetricData": {"*"},
    },
    # The console serves its own package's files: no AWS access beyond logs and traces.
    "ConsoleFn": {},
    "ReconcileFn": {
        # The sparse sweep index only: never a table scan, never another index.
        "dynamodb:Query": {"${JobsTable.Arn}/index/sweep-index"},
        "dynamodb:GetItem": {TABLE},
        "dynamodb:UpdateItem": {TABLE, COUNTS},
        # Repairing the counts: the sparse active index (active jobs only) and the counts.
        "dynamodb:Scan": {"${JobsTable.Arn}/index/owner-active-index", COUNTS},
        "sagemaker:DescribeTrainingJob": ALL_TRAINING_JOBS,
        "s3:GetObject": {MODELS},
        "s3:ListBucket": {BUCKET},
        "kms:Decrypt": {KEY},
        "kms:GenerateDataKey": {KEY},
        "sqs:SendMessage": {"${StageQueue.Arn}", RETRY_QUEUE},
        # Batch's view of a queued job whose event was lost, and the training job of one
        # whose every event was lost (neither has resource-level permissions); a job that
        # ended in the queue leaves nothing staged.
        "batch:DescribeServiceJob": {"*"},
        "sagemaker:ListTrainingJobs": {"*"},
        "s3:DeleteObject": {DATASETS},
    },
}

BASE_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",  # its own log streams
    "AWSXrayWriteOnlyAccess",  # active tracing
}
# What SAM attaches for an SQS event source (receive, delete, queue attributes).
SQS_POLLER_POLICY = "service-role/AWSLambdaSQSQueueExecutionRole"


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_function_role_allows_exactly_its_table_of_actions(
    cfn: dict[str, Any], function_id: str
) -> None:
    # Given the function's role after the SAM transform
    role_id = f"{function_id}Role"

    # Then its inline policies allow exactly the expected actions on the expected resources
    assert role_permissions(cfn, role_id) == EXPECTED_PERMISSIONS[function_id]

    # And the only managed policies are the logging / tracing basics, plus SAM's SQS poller
    # policy for the two queue consumers
    expected_managed = set(BASE_MANAGED_POLICIES)
    if function_id in ("StageFn", "RetryFn"):
        expected_managed.add(SQS_POLLER_POLICY)
    assert managed_policy_names(cfn, role_id) == expected_managed


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_function_role_is_assumable_by_lambda_only(cfn: dict[str, Any], function_id: str) -> None:
    trust = cfn["Resources"][f"{function_id}Role"]["Properties"]["AssumeRolePolicyDocument"]
    principals = {
        service
        for statement in statements(trust)
        for service in as_list(statement["Principal"]["Service"])
    }
    assert principals == {"lambda.amazonaws.com"}


def test_no_allow_statement_grants_a_wildcard_action(cfn: dict[str, Any]) -> None:
    # Given every policy document in the stack (roles, bucket, queues, key)
    offenders = []
    for logical_id, kind, document in policy_documents(cfn):
        for statement in statements(document):
            if statement.get("Effect") != "Allow":
                continue  # a Deny of s3:* (the TLS guard) narrows access
            assert "NotAction" not in statement, f"{logical_id}: NotAction in an Allow"
            for action in actions(statement):
                if action == "*" or action.endswith(":*"):
                    offenders.append((logical_id, kind, action))
    # Then no Allow names "*" or "service:*"
    assert not offenders


def test_identity_policies_use_resource_star_only_where_aws_requires_it(
    cfn: dict[str, Any],
) -> None:
    # ecr:GetAuthorizationToken, cloudwatch:PutMetricData and cloudwatch:GetMetricData have no
    # resource-level permissions, and neither have Batch's service-job reads nor SageMaker's
    # ListTrainingJobs
    unscoped_ok = {
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
        "cloudwatch:GetMetricData",
        "batch:DescribeServiceJob",
        "batch:ListServiceJobs",
        "sagemaker:ListTrainingJobs",
    }
    offenders = []
    for logical_id, kind, document in policy_documents(cfn):
        if kind != "identity":
            continue
        for statement in statements(document):
            unscoped = "*" in as_list(statement.get("Resource", []))
            if unscoped and not set(actions(statement)) <= unscoped_ok:
                offenders.append((logical_id, actions(statement)))
    assert not offenders


def test_metric_publishing_is_confined_to_sagemakers_namespace(cfn: dict[str, Any]) -> None:
    statement = statements_with_action(cfn, "SageMakerExecutionRole", "cloudwatch:PutMetricData")
    assert len(statement) == 1
    assert statement[0]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}
    }


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_data_keys_are_only_generated_through_s3_or_sqs(
    cfn: dict[str, Any], function_id: str
) -> None:
    for statement in statements_with_action(cfn, f"{function_id}Role", "kms:GenerateDataKey"):
        via = statement["Condition"]["StringEquals"]["kms:ViaService"]
        services = {render(v) for v in as_list(via)}
        assert services <= {"s3.${AWS::Region}.amazonaws.com", "sqs.${AWS::Region}.amazonaws.com"}


def test_create_fn_can_decrypt_only_through_sqs(cfn: dict[str, Any]) -> None:
    # CreateFn seals client secrets but must never be able to open them
    decrypts = statements_with_action(cfn, "CreateFnRole", "kms:Decrypt")
    assert decrypts
    for statement in decrypts:
        via = statement["Condition"]["StringEquals"]["kms:ViaService"]
        assert render(via) == "sqs.${AWS::Region}.amazonaws.com"


def test_execution_role_can_be_passed_to_sagemaker_only(cfn: dict[str, Any]) -> None:
    (statement,) = statements_with_action(cfn, "StageFnRole", "iam:PassRole")
    assert statement["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }


@pytest.mark.parametrize("function_id", ["NotifyFn", "RetryFn", "ModelUrlFn", "ReconcileFn"])
def test_bucket_listing_is_limited_to_the_models_prefix(
    cfn: dict[str, Any], function_id: str
) -> None:
    (statement,) = statements_with_action(cfn, f"{function_id}Role", "s3:ListBucket")
    assert statement["Condition"] == {"StringLike": {"s3:prefix": "models/*"}}


def test_sagemaker_execution_role_reads_datasets_writes_models_and_pulls_images(
    cfn: dict[str, Any],
) -> None:
    role = cfn["Resources"]["SageMakerExecutionRole"]["Properties"]
    trust = statements(role["AssumeRolePolicyDocument"])
    assert [s["Principal"] for s in trust] == [{"Service": "sagemaker.amazonaws.com"}]

    logs_group = (
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
        ":log-group:/aws/sagemaker/TrainingJobs"
    )
    repositories = "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*"
    assert role_permissions(cfn, "SageMakerExecutionRole") == {
        # checkpoints/*: managed spot syncs /opt/ml/checkpoints there and back (issue 13)
        "s3:GetObject": {DATASETS, CHECKPOINTS},
        "s3:ListBucket": {BUCKET},
        "s3:PutObject": {MODELS, CHECKPOINTS},
        "kms:Decrypt": {KEY},
        "kms:GenerateDataKey": {KEY},
        "kms:Encrypt": {KEY},
        "ecr:GetAuthorizationToken": {"*"},
        "ecr:BatchGetImage": {repositories},
        "ecr:GetDownloadUrlForLayer": {repositories},
        "ecr:BatchCheckLayerAvailability": {repositories},
        "logs:CreateLogGroup": {logs_group, logs_group + ":*"},
        "logs:CreateLogStream": {logs_group, logs_group + ":*"},
        "logs:PutLogEvents": {logs_group, logs_group + ":*"},
        "logs:DescribeLogStreams": {logs_group, logs_group + ":*"},
        "cloudwatch:PutMetricData": {"*"},
    }
    listings = statements_with_action(cfn, "SageMakerExecutionRole", "s3:ListBucket")
    assert sorted(str(s["Condition"]) for s in listings) == sorted(
        str({"StringLike": {"s3:prefix": prefix}}) for prefix in ("datasets/*", "checkpoints/*")
    )


def test_key_policy_keeps_the_account_in_control_and_scopes_services(
    cfn: dict[str, Any],
) -> None:
    key = cfn["Resources"]["FactoryKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    policy = statements(key["KeyPolicy"])
    root = "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"

    # The account can administer the key (it cannot become unmanageable)
    admin = [s for s in policy if "kms:PutKeyPolicy" in actions(s) or "kms:Put*" in actions(s)]
    assert admin and all(render(s["Principal"]["AWS"]) == root for s in admin)
    assert any("kms:ScheduleKeyDeletion" in actions(s) for s in admin)

    # Any service principal is held to conditions
    for statement in policy:
        if "Service" in statement["Principal"]:
            assert statement.get("Condition"), statement


def test_rule_dead_letters_are_accepted_from_the_training_state_rules_only(
    cfn: dict[str, Any],
) -> None:
    policy = cfn["Resources"]["NotifyDLQPolicy"]["Properties"]
    assert [render(q) for q in policy["Queues"]] == ["${NotifyDLQ}"]
    (statement,) = statements(policy["PolicyDocument"])
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert actions(statement) == ["sqs:SendMessage"]
    assert [render(a) for a in statement["Condition"]["ArnEquals"]["aws:SourceArn"]] == [
        "${NotifyFnTrainingStateRule.Arn}",
        "${NotifyFnBatchStateRule.Arn}",
    ]


@pytest.mark.parametrize("function_id", ["RedeliverFn", "ModelUrlFn"])
def test_new_api_functions_use_the_key_only_through_a_service(
    cfn: dict[str, Any], function_id: str
) -> None:
    # Neither can open a client's sealed secrets: replay is sent by RetryFn, and a model link
    # needs the key only when S3 reads the object for whoever follows it.
    for statement in statements_with_action(cfn, f"{function_id}Role", "kms:Decrypt"):
        via = render(statement["Condition"]["StringEquals"]["kms:ViaService"])
        assert via in {"sqs.${AWS::Region}.amazonaws.com", "s3.${AWS::Region}.amazonaws.com"}


def test_list_fn_uses_the_key_for_page_tokens_only(cfn: dict[str, Any]) -> None:
    # ListFn seals and opens page tokens; the condition keeps it from a job's sealed secrets.
    for action in ("kms:Encrypt", "kms:Decrypt"):
        statements = statements_with_action(cfn, "ListFnRole", action)
        assert statements
        for statement in statements:
            context = statement["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"]
            assert context == "aifactory-page-token-v1"
