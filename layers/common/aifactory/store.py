"""The jobs table: every state change is one conditional write, so races resolve in DynamoDB."""

import base64
import binascii
import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError, ParamValidationError

from aifactory import aws
from aifactory.errors import BadRequest
from aifactory.models import TERMINAL_STATUSES

OWNER_INDEX = "owner-created_at-index"
_deserializer = TypeDeserializer()


def _plain(value: Any) -> Any:
    """DynamoDB's Decimals and Binary back to plain Python values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and isinstance(value.value, bytes):  # boto3 Binary
        return bytes(value.value)
    return value


def _conditional_failed(exc: ClientError) -> bool:
    return aws.error_code(exc) == "ConditionalCheckFailedException"


class JobStore:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self.table = aws.resource("dynamodb").Table(table_name)

    # -- reads -----------------------------------------------------------------------------
    def get(self, job_name: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"job_name": job_name}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def list_for_owner(
        self, owner: str, *, status: str | None, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The owner's jobs, newest first; boto3's paginator keeps `limit` exact under a filter."""
        paginator = aws.client("dynamodb").get_paginator("query")
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ScanIndexForward": False,
        }
        if status:
            params["FilterExpression"] = "#status = :status"
            params["ExpressionAttributeNames"]["#status"] = "status"
            params["ExpressionAttributeValues"][":status"] = {"S": status}
        config: dict[str, Any] = {"MaxItems": limit, "PageSize": limit}
        if next_token:
            _check_token(next_token, owner)
            config["StartingToken"] = next_token
        try:
            result = paginator.paginate(**params, PaginationConfig=config).build_full_result()
        except (ValueError, ParamValidationError, binascii.Error) as exc:
            raise BadRequest("next_token: is not a token this API issued") from exc
        except ClientError as exc:
            if aws.error_code(exc) == "ValidationException":
                raise BadRequest("next_token: is not a token this API issued") from exc
            raise
        items = [
            _plain({k: _deserializer.deserialize(v) for k, v in item.items()})
            for item in result.get("Items", [])
        ]
        return items, result.get("NextToken")

    # -- writes ----------------------------------------------------------------------------
    def create(self, item: dict[str, Any]) -> None:
        self.table.put_item(Item=item, ConditionExpression=Attr("job_name").not_exists())

    def delete(self, job_name: str) -> None:
        self.table.delete_item(Key={"job_name": job_name})

    def _update(
        self,
        job_name: str,
        sets: dict[str, Any],
        condition: Any = None,
        removes: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """SET (and REMOVE) fields if `condition` holds; the new item, or None if it did not."""
        names = {f"#{i}": key for i, key in enumerate(sets)}
        values = {f":{i}": value for i, value in enumerate(sets.values())}
        expression = "SET " + ", ".join(f"#{i} = :{i}" for i in range(len(sets)))
        if removes:
            offset = len(sets)
            names.update({f"#{offset + i}": key for i, key in enumerate(removes)})
            expression += " REMOVE " + ", ".join(f"#{offset + i}" for i in range(len(removes)))
        kwargs: dict[str, Any] = {
            "Key": {"job_name": job_name},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }
        condition = Attr("job_name").exists() if condition is None else condition
        kwargs["ConditionExpression"] = condition & Attr("job_name").exists()
        try:
            return _plain(self.table.update_item(**kwargs)["Attributes"])
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise

    def request_stop(self, job_name: str) -> dict[str, Any] | None:
        """Record a stop request, unless the job has already ended."""
        return self._update(
            job_name,
            {"stop_requested": True, "status": "Stopping"},
            Attr("status").is_in(["InProgress", "Stopping"]),
        )

    def mark_starting(self, job_name: str) -> dict[str, Any] | None:
        """Staging is done; claim the job for CreateTrainingJob unless a stop came first."""
        return self._update(
            job_name,
            {"secondary_status": "Starting"},
            Attr("secondary_status").eq("Staging")
            & (Attr("stop_requested").not_exists() | Attr("stop_requested").eq(False)),
        )

    def mark_sagemaker_created(self, job_name: str) -> dict[str, Any] | None:
        return self._update(job_name, {"sagemaker_job": True})

    def finish(
        self, job_name: str, status: str, *, reason: str | None, end_time: str
    ) -> dict[str, Any] | None:
        """End a job that never reached SageMaker (staging failed or stopped)."""
        sets: dict[str, Any] = {
            "status": status,
            "secondary_status": status,
            "training_end_time": end_time,
        }
        if reason:
            sets["failure_reason"] = reason
        return self._update(job_name, sets, ~Attr("status").is_in(list(TERMINAL_STATUSES)))

    def apply_event(
        self, job_name: str, event_millis: int, fields: dict[str, Any], *, terminal: bool
    ) -> dict[str, Any] | None:
        """Apply a SageMaker state change unless it is stale, a duplicate, or the job has ended.

        A terminal change wins a tie with the change before it (both in the same millisecond).
        """
        newer = (
            Attr("last_event_time").lte(event_millis)
            if terminal
            else Attr("last_event_time").lt(event_millis)
        )
        condition = (Attr("last_event_time").not_exists() | newer) & ~Attr("status").is_in(
            list(TERMINAL_STATUSES)
        )
        return self._update(job_name, {**fields, "last_event_time": event_millis}, condition)

    def claim_callback(self, job_name: str, now_iso: str, stale_before_iso: str) -> bool:
        """Take the one right to send a job's callback.

        A claim left in `sending` by a crashed invocation may be taken over once stale.
        """
        condition = Attr("callback_state").not_exists() | (
            Attr("callback_state").eq("sending") & Attr("callback_claimed_at").lt(stale_before_iso)
        )
        return (
            self._update(
                job_name,
                {
                    "callback_state": "sending",
                    "callback_claimed_at": now_iso,
                    "callback_attempts": 0,
                },
                condition,
            )
            is not None
        )

    def record_delivery(
        self, job_name: str, state: str, attempts: int, error: str | None = None
    ) -> None:
        sets: dict[str, Any] = {"callback_state": state, "callback_attempts": attempts}
        if error:
            sets["callback_last_error"] = error
        self._update(job_name, sets, removes=() if error else ("callback_last_error",))

    def record_cost(self, job_name: str, fields: dict[str, Any]) -> None:
        """What an ended job cost (training_seconds, billable_seconds, spot, spot_savings)."""
        self._update(job_name, {k: _dynamo_number(v) for k, v in fields.items()})


def _check_token(token: str, owner: str) -> None:
    """A continuation token must be one of ours, for this owner's index."""
    try:
        decoded = json.loads(base64.b64decode(token, validate=True))
        start_key = decoded.get("ExclusiveStartKey")
        # Within the first page the token holds only how many items to skip.
        token_owner = start_key["owner"]["S"] if start_key is not None else owner
        valid = isinstance(decoded.get("boto_truncate_amount", 0), int)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise BadRequest("next_token: is not a token this API issued") from None
    if token_owner != owner or not valid:
        raise BadRequest("next_token: is not a token this API issued")


def _dynamo_number(value: Any) -> Any:
    """DynamoDB takes Decimal, not float."""
    return Decimal(str(value)) if isinstance(value, float) else value
