"""The stack's shape: API and usage plan, functions and their triggers, queues, bucket, table,
parameters and outputs, checked on the template after the SAM transform."""

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from aifactory.settings import Settings
from tests.template.cfn import (
    API_ROUTES,
    CONSOLE_ROUTES,
    EXTRA_API_ROUTES,
    FUNCTIONS,
    as_list,
    render,
    resources_of_type,
    statements,
)

pytestmark = pytest.mark.template

POWERTOOLS_ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_LOG_LEVEL",
    "POWERTOOLS_METRICS_NAMESPACE",
}


def props(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(cfn["Resources"][logical_id]["Properties"])


# ------------------------------------------------------------------------------------------
# API
# ------------------------------------------------------------------------------------------


def api_body(cfn: dict[str, Any]) -> dict[str, Any]:
    return dict(props(cfn, "FactoryApi")["Body"])


def test_api_serves_the_seed_routes_and_the_callback_routes_as_post(cfn: dict[str, Any]) -> None:
    paths = api_body(cfn)["paths"]
    assert set(paths) == set(API_ROUTES.values()) | set(EXTRA_API_ROUTES) | set(CONSOLE_ROUTES)
    routes = [*API_ROUTES.items(), *((fn, route) for route, fn in EXTRA_API_ROUTES.items())]
    for function_id, route in routes:
        assert set(paths[route]) == {"post"}, route
        integration = paths[route]["post"]["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy"
        assert f"${{{function_id}.Arn}}" in render(integration["uri"])


def test_every_api_method_requires_an_api_key_and_nothing_else(cfn: dict[str, Any]) -> None:
    # API Gateway imports each operation with ApiKeyRequired true for the api_key scheme; with
    # no authorizer declared anywhere, every method's AuthorizationType is NONE.
    body = api_body(cfn)
    schemes = body["components"]["securitySchemes"]
    assert schemes == {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}
    for route, operations in body["paths"].items():
        if route in CONSOLE_ROUTES:
            continue  # the console's static page and assets (next test)
        for method, operation in operations.items():
            assert operation["security"] == [{"api_key": []}], f"{method} {route}"
    assert not resources_of_type(cfn, "AWS::ApiGateway::Authorizer")
    # Methods exist only in the OpenAPI body, so none can be declared without the key.
    assert not resources_of_type(cfn, "AWS::ApiGateway::Method")


def test_only_the_consoles_static_routes_need_no_key_and_they_are_get(
    cfn: dict[str, Any],
) -> None:
    # The page and its assets hold no data; a browser opening a URL sends no x-api-key.
    paths = api_body(cfn)["paths"]
    for route, function_id in CONSOLE_ROUTES.items():
        assert set(paths[route]) == {"get"}, route
        operation = paths[route]["get"]
        assert operation.get("security", []) == [], route
        integration = operation["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy"
        assert f"${{{function_id}.Arn}}" in render(integration["uri"])
    # And its function reaches nothing: its role has no inline policy at all
    assert not props(cfn, "ConsoleFnRole").get("Policies")


def test_api_stage_is_named_by_the_stage_parameter(cfn: dict[str, Any]) -> None:
    stages = resources_of_type(cfn, "AWS::ApiGateway::Stage")
    assert list(stages) == ["FactoryApiStage"]
    assert stages["FactoryApiStage"]["Properties"]["StageName"] == {"Ref": "StageName"}


def test_usage_plan_and_api_key_are_linked_to_the_stage(cfn: dict[str, Any]) -> None:
    plan = props(cfn, "FactoryApiUsagePlan")
    assert plan["ApiStages"] == [
        {"ApiId": {"Ref": "FactoryApi"}, "Stage": {"Ref": "FactoryApiStage"}}
    ]

    key = props(cfn, "FactoryApiApiKey")
    assert key["Enabled"] is True
    assert key["StageKeys"] == [
        {"RestApiId": {"Ref": "FactoryApi"}, "StageName": {"Ref": "FactoryApiStage"}}
    ]

    plan_key = props(cfn, "FactoryApiUsagePlanKey")
    assert plan_key["KeyType"] == "API_KEY"
    assert plan_key["KeyId"] == {"Ref": "FactoryApiApiKey"}
    assert plan_key["UsagePlanId"] == {"Ref": "FactoryApiUsagePlan"}


def test_usage_plan_limits_come_from_the_parameters(
    transform_with: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    # Given non-default limits, when the stack is transformed with them
    cfn = transform_with(
        {
            "ApiThrottleRateLimit": 7,
            "ApiThrottleBurstLimit": 9,
            "ApiQuotaLimit": 1234,
            "ApiQuotaPeriod": "WEEK",
        }
    )
    # Then the usage plan carries them
    plan = props(cfn, "FactoryApiUsagePlan")
    assert plan["Throttle"] == {"RateLimit": 7, "BurstLimit": 9}
    assert plan["Quota"] == {"Limit": 1234, "Period": "WEEK"}


@pytest.mark.parametrize("response_type", ["DEFAULT_4XX", "DEFAULT_5XX"])
def test_api_gateway_errors_keep_a_json_body(cfn: dict[str, Any], response_type: str) -> None:
    responses = api_body(cfn)["x-amazon-apigateway-gateway-responses"]
    template = responses[response_type]["responseTemplates"]["application/json"]
    # $context.error.messageString is the message already quoted, e.g. "Forbidden"
    rendered = template.replace("$context.error.messageString", json.dumps("Forbidden"))
    assert json.loads(rendered) == {"message": "Forbidden"}


# ------------------------------------------------------------------------------------------
# Functions and their triggers
# ------------------------------------------------------------------------------------------


def test_stack_has_exactly_its_twelve_functions(cfn: dict[str, Any]) -> None:
    assert set(resources_of_type(cfn, "AWS::Lambda::Function")) == set(FUNCTIONS)


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_function_runs_python313_on_arm64_with_the_common_layer(
    cfn: dict[str, Any], sam_template: dict[str, Any], function_id: str
) -> None:
    function = props(cfn, function_id)
    assert function["Architectures"] == ["arm64"]
    assert function["Runtime"] == "python3.13"
    assert function["Handler"] == "app.lambda_handler"
    (layer,) = function["Layers"]
    layer_id = layer["Ref"]
    assert cfn["Resources"][layer_id]["Type"] == "AWS::Lambda::LayerVersion"
    assert layer_id.startswith("CommonLayer")

    source = sam_template["Resources"][function_id]["Properties"]
    assert source["CodeUri"].rstrip("/") == f"functions/{FUNCTIONS[function_id]}"


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_function_environment_is_what_the_settings_model_reads(
    cfn: dict[str, Any], function_id: str
) -> None:
    variables = props(cfn, function_id)["Environment"]["Variables"]
    fields = Settings.model_fields.values()
    readable = {str(field.alias) for field in fields}
    required = {str(field.alias) for field in fields if field.is_required()}
    # every variable is one the layer reads, and nothing it requires is missing
    assert set(variables) - POWERTOOLS_ENVIRONMENT <= readable
    assert required <= set(variables)
    assert set(variables) >= POWERTOOLS_ENVIRONMENT
    assert variables["ALLOW_PRIVATE_URLS"] == "false"
    assert variables["POWERTOOLS_SERVICE_NAME"] == "aifactory"
    assert variables["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert variables["JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert variables["KMS_KEY_ID"] == {"Fn::GetAtt": ["FactoryKey", "Arn"]}
    assert variables["SAGEMAKER_ROLE_ARN"] == {"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}
    # An empty AllowedImagePrefixes means this account's ECR registry in this region
    assert variables["ALLOWED_IMAGE_PREFIXES"] == {
        "Fn::If": [
            "HasAllowedImagePrefixes",
            {"Ref": "AllowedImagePrefixes"},
            {"Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.amazonaws.com/"},
        ]
    }


def test_stage_fn_reads_the_staging_parameters(cfn: dict[str, Any]) -> None:
    variables = props(cfn, "StageFn")["Environment"]["Variables"]
    assert {name: value for name, value in variables.items() if name.startswith("STAGING_")} == {
        "STAGING_CONCURRENCY": {"Ref": "StagingConcurrency"},
        "STAGING_MAX_PAGE_ATTEMPTS": {"Ref": "StagingMaxPageAttempts"},
        "STAGING_SHARD_BYTES": {"Ref": "StagingShardBytes"},
        "STAGING_MAX_CONTINUATIONS": {"Ref": "StagingMaxContinuations"},
    }
    # and the parameters' defaults are the settings model's, so an unset variable changes
    # nothing
    parameters = cfn["Parameters"]
    for name, value in variables.items():
        if name.startswith("STAGING_"):
            field = next(f for f in Settings.model_fields.values() if f.alias == name)
            assert int(parameters[value["Ref"]]["Default"]) == field.default, name


def test_api_functions_finish_within_api_gateways_29_seconds(cfn: dict[str, Any]) -> None:
    for function_id in API_ROUTES:
        assert props(cfn, function_id)["Timeout"] <= 29, function_id


@pytest.mark.parametrize(
    ("function_id", "queue_id", "event_id"),
    [
        ("StageFn", "StageQueue", "StageRequests"),
        ("RetryFn", "CallbackRetryQueue", "CallbackRetries"),
    ],
)
def test_queue_worker_takes_one_message_and_reports_item_failures(
    cfn: dict[str, Any], function_id: str, queue_id: str, event_id: str
) -> None:
    mappings = {
        logical_id: resource["Properties"]
        for logical_id, resource in resources_of_type(
            cfn, "AWS::Lambda::EventSourceMapping"
        ).items()
        if resource["Properties"]["FunctionName"] == {"Ref": function_id}
    }
    assert list(mappings) == [f"{function_id}{event_id}"]
    (mapping,) = mappings.values()
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert mapping["BatchSize"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # Lambda refuses an SQS trigger whose visibility timeout is shorter than the function's
    assert props(cfn, function_id)["Timeout"] <= props(cfn, queue_id)["VisibilityTimeout"]


def test_stage_fn_may_run_for_fifteen_minutes(cfn: dict[str, Any]) -> None:
    assert props(cfn, "StageFn")["Timeout"] == 900


def test_training_state_rules_match_factory_jobs_only(cfn: dict[str, Any]) -> None:
    rules = resources_of_type(cfn, "AWS::Events::Rule")
    assert set(rules) == {"NotifyFnTrainingStateRule", "NotifyFnBatchStateRule", "ReconcileFnSweep"}
    rule = rules["NotifyFnTrainingStateRule"]["Properties"]
    # SageMaker's events, for training jobs started directly or by AWS Batch
    assert rule["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Training Job State Change"],
        "detail": {
            "TrainingJobName": [
                {"prefix": "sage-maker-train-"},
                {"prefix": "AWSBatchsage-maker-train-"},
            ]
        },
    }
    # and Batch's, for the service jobs of the Factory's jobs while they wait in the queue
    assert rules["NotifyFnBatchStateRule"]["Properties"]["EventPattern"] == {
        "source": ["aws.batch"],
        "detail-type": ["Batch Service Job State Change"],
        "detail": {"jobName": [{"prefix": "sage-maker-train-"}]},
    }
    for rule_id in ("NotifyFnTrainingStateRule", "NotifyFnBatchStateRule"):
        (target,) = rules[rule_id]["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["NotifyFn", "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["NotifyDLQ", "Arn"]}}
        assert set(target["RetryPolicy"]) == {"MaximumEventAgeInSeconds", "MaximumRetryAttempts"}
        permission = props(cfn, f"{rule_id}Permission")
        assert permission["Principal"] == "events.amazonaws.com"
        assert permission["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}


def test_failed_notify_invocations_land_in_notify_dlq(cfn: dict[str, Any]) -> None:
    config = props(cfn, "NotifyFnEventInvokeConfig")
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["NotifyDLQ", "Arn"]
    }


def test_common_layer_is_built_for_python313_on_arm64(
    cfn: dict[str, Any], sam_template: dict[str, Any]
) -> None:
    (layer,) = resources_of_type(cfn, "AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]

    source = sam_template["Resources"]["CommonLayer"]
    assert source["Properties"]["ContentUri"].rstrip("/") == "layers/common"
    assert source["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}


@pytest.mark.parametrize("function_id", sorted(FUNCTIONS))
def test_function_logs_to_its_own_log_group_with_retention(
    cfn: dict[str, Any], function_id: str
) -> None:
    log_group_id = f"{function_id}LogGroup"
    assert props(cfn, function_id)["LoggingConfig"]["LogGroup"] == {"Ref": log_group_id}
    assert props(cfn, log_group_id)["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# ------------------------------------------------------------------------------------------
# Queues
# ------------------------------------------------------------------------------------------


def test_every_queue_is_encrypted_with_the_factory_key(cfn: dict[str, Any]) -> None:
    queues = resources_of_type(cfn, "AWS::SQS::Queue")
    assert set(queues) == {
        "StageQueue",
        "StageDLQ",
        "CallbackRetryQueue",
        "CallbackDLQ",
        "NotifyDLQ",
    }
    for logical_id, queue in queues.items():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": ["FactoryKey", "Arn"]}, (
            logical_id
        )


@pytest.mark.parametrize(
    ("queue_id", "visibility", "dlq_id", "max_receives"),
    [
        ("StageQueue", 5400, "StageDLQ", 3),
        ("CallbackRetryQueue", 120, "CallbackDLQ", {"Ref": "CallbackMaxAttempts"}),
    ],
)
def test_work_queue_redrives_to_its_dead_letter_queue(
    cfn: dict[str, Any], queue_id: str, visibility: int, dlq_id: str, max_receives: Any
) -> None:
    queue = props(cfn, queue_id)
    assert queue["VisibilityTimeout"] == visibility
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": max_receives,
    }
    # A message outlives its retries, so it reaches the DLQ rather than expiring
    assert props(cfn, dlq_id)["MessageRetentionPeriod"] == 1209600


# ------------------------------------------------------------------------------------------
# Bucket, table, key
# ------------------------------------------------------------------------------------------


def test_bucket_is_private_and_encrypted_with_the_factory_key(cfn: dict[str, Any]) -> None:
    bucket = props(cfn, "DataBucket")
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["FactoryKey", "Arn"]},
    }
    assert rule["BucketKeyEnabled"] is True


def test_bucket_expires_datasets_and_abandoned_uploads(cfn: dict[str, Any]) -> None:
    rules = props(cfn, "DataBucket")["LifecycleConfiguration"]["Rules"]
    datasets = [r for r in rules if r.get("Prefix") == "datasets/"]
    assert len(datasets) == 1 and datasets[0]["ExpirationInDays"] >= 1
    assert any(
        r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1
        and "Prefix" not in r
        for r in rules
    )
    # Models are never expired by a rule
    assert not [r for r in rules if "models" in r.get("Prefix", "") and "ExpirationInDays" in r]


def test_bucket_refuses_requests_without_tls(cfn: dict[str, Any]) -> None:
    policy = props(cfn, "DataBucketPolicy")
    assert policy["Bucket"] == {"Ref": "DataBucket"}
    denials = [
        s
        for s in statements(policy["PolicyDocument"])
        if s["Effect"] == "Deny"
        and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denials) == 1
    (deny,) = denials
    assert deny["Principal"] == "*"
    assert as_list(deny["Action"]) == ["s3:*"]
    assert {render(r) for r in as_list(deny["Resource"])} == {
        "${DataBucket.Arn}",
        "${DataBucket.Arn}/*",
    }


def test_jobs_table_has_the_job_key_and_the_owner_index(cfn: dict[str, Any]) -> None:
    table = props(cfn, "JobsTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "job_name", "KeyType": "HASH"}]
    assert sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": "active_owner", "AttributeType": "S"},
        {"AttributeName": "created_at", "AttributeType": "S"},
        {"AttributeName": "job_name", "AttributeType": "S"},
        {"AttributeName": "owner", "AttributeType": "S"},
        {"AttributeName": "owner_status", "AttributeType": "S"},
        {"AttributeName": "sweep", "AttributeType": "S"},
    ]
    indexes = {index["IndexName"]: index for index in table["GlobalSecondaryIndexes"]}
    assert indexes["sweep-index"] == {
        "IndexName": "sweep-index",
        "KeySchema": [
            {"AttributeName": "sweep", "KeyType": "HASH"},
            {"AttributeName": "created_at", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    }
    assert [indexes["owner-created_at-index"], indexes["owner-active-index"]] == [
        {
            "IndexName": "owner-created_at-index",
            "KeySchema": [
                {"AttributeName": "owner", "KeyType": "HASH"},
                {"AttributeName": "created_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        # Sparse: only active jobs carry active_owner (MaxActiveJobsPerOwner counts them).
        {
            "IndexName": "owner-active-index",
            "KeySchema": [{"AttributeName": "active_owner", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        },
    ]
    # Listing by status reads one partition of one owner's jobs in that status, newest first,
    # and holds only what a list answers with.
    assert indexes["owner-status-index"] == {
        "IndexName": "owner-status-index",
        "KeySchema": [
            {"AttributeName": "owner_status", "KeyType": "HASH"},
            {"AttributeName": "created_at", "KeyType": "RANGE"},
        ],
        "Projection": {
            "ProjectionType": "INCLUDE",
            "NonKeyAttributes": ["status", "training_end_time"],
        },
    }
    assert table["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": ["FactoryKey", "Arn"]},
    }
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


@pytest.mark.parametrize("logical_id", ["FactoryKey", "DataBucket", "JobsTable"])
def test_stateful_resources_survive_stack_deletion(cfn: dict[str, Any], logical_id: str) -> None:
    resource = cfn["Resources"][logical_id]
    assert resource["DeletionPolicy"] == "Retain"
    assert resource["UpdateReplacePolicy"] == "Retain"


def test_key_alias_names_the_factory_key(cfn: dict[str, Any]) -> None:
    alias = props(cfn, "FactoryKeyAlias")
    assert alias["TargetKeyId"] == {"Ref": "FactoryKey"}
    assert render(alias["AliasName"]).startswith("alias/")


# ------------------------------------------------------------------------------------------
# Parameters and outputs
# ------------------------------------------------------------------------------------------

DOCUMENTED_DEFAULTS = {
    "StageName": "prod",
    "AllowedImagePrefixes": "",
    "MaxInstanceCount": 4,
    "MaxVolumeSizeGB": 100,
    "MaxRuntimeSeconds": 86400,
    "MaxPagesCap": 10000,
    # A safety bound on receives only: the retry window ends the schedule.
    "CallbackMaxAttempts": 100,
    "CallbackRetryBaseSeconds": 60,
    "CallbackRetryCapSeconds": 42900,
    "CallbackRetryWindowSeconds": 259200,
    "ReconcileIntervalMinutes": 5,
    "PresignExpiresSeconds": 604800,
    "StagingConcurrency": 8,
    "StagingMaxPageAttempts": 5,
    "StagingShardBytes": 67108864,
    "StagingMaxContinuations": 200,
    "ApiQuotaPeriod": "DAY",
    "LogLevel": "INFO",
    "SpotTraining": "opt-in",
    "MaxWaitSeconds": 172800,
    "WarmPoolSeconds": 0,
    "InputMode": "File",
    "ReportScanMaxBytes": 6442450944,
    "ReportScanMaxSeconds": 60,
}


def test_parameters_have_the_documented_defaults(sam_template: dict[str, Any]) -> None:
    parameters = sam_template["Parameters"]
    for name, default in DOCUMENTED_DEFAULTS.items():
        assert str(parameters[name]["Default"]) == str(default), name
    assert parameters["CallbackMaxAttempts"]["MinValue"] == 6
    assert parameters["ApiQuotaPeriod"]["AllowedValues"] == ["DAY", "WEEK", "MONTH"]


def test_every_parameter_is_described_and_constrained(sam_template: dict[str, Any]) -> None:
    for name, parameter in sam_template["Parameters"].items():
        assert parameter.get("Description"), name
        if parameter["Type"] == "Number":
            assert "AllowedValues" in parameter or {"MinValue", "MaxValue"} <= set(parameter), name
        else:
            assert "AllowedValues" in parameter or "AllowedPattern" in parameter, name


def test_deployed_stack_cannot_allow_any_image(sam_template: dict[str, Any]) -> None:
    # "*" (any image) is for the local runtime only
    pattern = sam_template["Parameters"]["AllowedImagePrefixes"]["AllowedPattern"]
    assert re.fullmatch(pattern, "")
    assert re.fullmatch(pattern, "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo")
    assert not re.fullmatch(pattern, "*")


def test_outputs_name_what_an_operator_needs(sam_template: dict[str, Any]) -> None:
    outputs = sam_template["Outputs"]
    assert {
        "ApiUrl",
        "ApiKeyId",
        "ApiKeyConsoleHint",
        "UsagePlanId",
        "DataBucketName",
        "JobsTableName",
        "StageQueueUrl",
        "CallbackRetryQueueUrl",
        "CallbackDLQUrl",
        "StageDLQUrl",
        "NotifyDLQUrl",
        "IdempotencyTableName",
    } <= set(outputs)
    assert render(outputs["ApiUrl"]["Value"]).endswith("/${StageName}/")


def test_reconciler_runs_on_a_schedule_set_by_a_parameter(cfn: dict[str, Any]) -> None:
    rule = props(cfn, "ReconcileFnSweep")
    assert rule["State"] == "ENABLED"
    assert render(rule["ScheduleExpression"]) == "rate(${ReconcileIntervalMinutes} minutes)"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ReconcileFn", "Arn"]}
    permission = props(cfn, "ReconcileFnSweepPermission")
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": ["ReconcileFnSweep", "Arn"]}


def test_idempotency_table_expires_its_records_with_ttl(cfn: dict[str, Any]) -> None:
    table = props(cfn, "IdempotencyTable")
    # The key and expiry attributes Powertools' DynamoDBPersistenceLayer uses by default
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSESpecification"]["KMSMasterKeyId"] == {"Fn::GetAtt": ["FactoryKey", "Arn"]}


def test_callback_queues_outlast_the_longest_retry_schedule(
    sam_template: dict[str, Any],
) -> None:
    # The longest window plus one last capped wait still fits both queues' retention.
    parameters = sam_template["Parameters"]
    longest = parameters["CallbackRetryWindowSeconds"]["MaxValue"]
    longest += parameters["CallbackRetryCapSeconds"]["MaxValue"]
    assert parameters["CallbackRetryCapSeconds"]["MaxValue"] <= 12 * 3600
    assert parameters["CallbackRetryWindowSeconds"]["Default"] >= 72 * 3600
    for queue in ("CallbackRetryQueue", "CallbackDLQ"):
        retention = sam_template["Resources"][queue]["Properties"]["MessageRetentionPeriod"]
        assert retention >= longest, queue
