"""The jobs table: every state change is one conditional write, so races resolve in DynamoDB."""

import binascii
import functools
import random
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, ConditionExpressionBuilder, Key
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, ParamValidationError

from aifactory import aws, timefmt
from aifactory.errors import BadRequest
from aifactory.log import logger
from aifactory.models import TERMINAL_STATUSES
from aifactory.pagetokens import INVALID as INVALID_TOKEN

OWNER_INDEX = "owner-created_at-index"
# A sparse index: a job carries `active_owner` (its owner) only while it is staging or
# training, so counting an owner's active jobs reads just those, never the owner's history.
ACTIVE_INDEX = "owner-active-index"
ACTIVE_ATTRIBUTE = "active_owner"
# Sparse: only jobs whose end or callback is not settled yet carry SWEEP_KEY, so the
# reconciler reads those and never scans the table.
SWEEP_INDEX = "sweep-index"
SWEEP_KEY = "sweep"
SWEEP_OPEN = "open"
# Listing by status: every job carries STATUS_KEY = "<owner>#<status>", rewritten in the same
# write as each status change, so a filtered list is one Query of one page, newest first,
# however many jobs the owner has in other states. Jobs written before the index existed are
# given the attribute by `backfill_status_key` (run once after deploying).
STATUS_INDEX = "owner-status-index"
STATUS_KEY = "owner_status"
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


def status_key(owner: str, status: str) -> str:
    """The status index's partition key: one owner's jobs in one status."""
    return f"{owner}#{status}"


def _conditional_failed(exc: ClientError) -> bool:
    return aws.error_code(exc) == "ConditionalCheckFailedException"


class LimitReached(Exception):
    """The owner already has `active` jobs, the most it may have; nothing was written."""

    def __init__(self, active: int) -> None:
        super().__init__(active)
        self.active = active


class JobStore:
    def __init__(self, table_name: str, counts_table_name: str = "") -> None:
        self.table_name = table_name
        # One item per owner, {owner, active, changed_at}: how many of its jobs are active.
        self.counts_table_name = counts_table_name

    @functools.cached_property
    def table(self) -> Any:
        # Built on first use, not at cold start: a DynamoDB resource costs tens of ms.
        return aws.resource("dynamodb").Table(self.table_name)

    # -- reads -----------------------------------------------------------------------------
    def get(self, job_name: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"job_name": job_name}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def get_owned(self, job_name: str, owner: str) -> dict[str, Any] | None:
        """The job if `owner` owns it; None for another owner's job and for a missing one alike.

        DynamoDB applies the owner filter before it answers, so both cases get the same empty
        answer: nothing of another tenant's job is sent, read or deserialized here, and the
        time taken does not tell the two apart.
        """
        answer = self.table.query(
            KeyConditionExpression=Key("job_name").eq(job_name),
            FilterExpression=Attr("owner").eq(owner),
            ConsistentRead=True,
        )
        items = answer.get("Items") or []
        return _plain(items[0]) if items else None

    def list_for_owner(
        self, owner: str, *, status: str | None, limit: int, next_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The owner's jobs, newest first; boto3's paginator keeps `limit` exact under a filter.

        `next_token` is the paginator's own token, as this method returned it: the API never
        takes one from a client but through `pagetokens`, which only opens tokens it sealed.
        """
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
            # One partition per owner and status: the page read is the page returned.
            params.update(
                IndexName=STATUS_INDEX,
                ExpressionAttributeNames={"#key": STATUS_KEY},
                ExpressionAttributeValues={":key": {"S": status_key(owner, status)}},
                KeyConditionExpression="#key = :key",
            )
        config: dict[str, Any] = {"MaxItems": limit, "PageSize": limit}
        if next_token:
            config["StartingToken"] = next_token
        try:
            result = paginator.paginate(**params, PaginationConfig=config).build_full_result()
        except (ValueError, ParamValidationError, binascii.Error) as exc:
            raise BadRequest(INVALID_TOKEN) from exc
        except ClientError as exc:
            if next_token and aws.error_code(exc) == "ValidationException":
                raise BadRequest(INVALID_TOKEN) from exc
            raise
        items = [
            _plain({k: _deserializer.deserialize(v) for k, v in item.items()})
            for item in result.get("Items", [])
        ]
        return items, result.get("NextToken")

    def active_count(self, owner: str) -> int:
        """The owner's counter: its jobs from create until they end, whatever their state."""
        item = (
            aws.client("dynamodb")
            .get_item(
                TableName=self.counts_table_name, Key={"owner": {"S": owner}}, ConsistentRead=True
            )
            .get("Item")
        )
        return int(item["active"]["N"]) if item and "active" in item else 0

    def _owner(self, job_name: str) -> str | None:
        """The job's owner (which never changes), or None if there is no such job."""
        item = self.table.get_item(
            Key={"job_name": job_name},
            ProjectionExpression="#owner",
            ExpressionAttributeNames={"#owner": "owner"},
            ConsistentRead=True,
        ).get("Item")
        return str(item["owner"]) if item and "owner" in item else None

    # -- writes ----------------------------------------------------------------------------
    def create(self, item: dict[str, Any]) -> None:
        if "status" in item and "owner" in item:
            item = {**item, STATUS_KEY: status_key(item["owner"], item["status"])}
        self.table.put_item(Item=item, ConditionExpression=Attr("job_name").not_exists())

    def create_counted(self, item: dict[str, Any], *, limit: int) -> None:
        """Write a new job and count it against its owner, in one transaction.

        The owner's counter goes up only while it is below `limit`, and the job is written
        only if its name is free: both or neither. LimitReached (with the count) when the
        owner is at its limit; a ClientError when the name is taken.
        """
        owner = str(item["owner"])
        item = {**item, STATUS_KEY: status_key(owner, str(item["status"]))}
        put = {
            "Put": {
                "TableName": self.table_name,
                "Item": _serialize(item),
                "ConditionExpression": "attribute_not_exists(job_name)",
            }
        }
        count = {
            "Update": {
                "TableName": self.counts_table_name,
                "Key": {"owner": {"S": owner}},
                "UpdateExpression": "SET active = if_not_exists(active, :zero) + :one, "
                "changed_at = :now",
                "ConditionExpression": "attribute_not_exists(active) OR active < :limit",
                "ExpressionAttributeValues": {
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit)},
                    ":now": {"S": timefmt.to_iso(timefmt.now())},
                },
            }
        }
        reasons = _transact([count, put])
        if reasons is None:
            return
        if reasons[0] == "ConditionalCheckFailed":
            raise LimitReached(self.active_count(owner))
        raise ClientError(
            {"Error": {"Code": "ConditionalCheckFailedException", "Message": str(reasons)}},
            "TransactWriteItems",
        )

    def delete(self, job_name: str) -> None:
        self.table.delete_item(Key={"job_name": job_name})

    def delete_counted(self, job_name: str, owner: str) -> None:
        """Take back a job that was just created (its staging could not be queued), and its
        place in the owner's count, in one transaction."""
        reasons = _transact(
            [
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": {"job_name": {"S": job_name}},
                        "ConditionExpression": "attribute_exists(#active)",
                        "ExpressionAttributeNames": {"#active": ACTIVE_ATTRIBUTE},
                    }
                },
                _release(self.counts_table_name, owner),
            ]
        )
        if reasons is not None:
            self.delete(job_name)  # counted already released, or a drifted counter

    def _end(self, job_name: str, sets: dict[str, Any], condition: Any) -> dict[str, Any] | None:
        """A job's terminal transition: the update (if `condition` holds) and, while the job
        still counts against its owner, the release of that count, in one transaction.

        The update removes ACTIVE_ATTRIBUTE, and the release requires it, so a job is
        released exactly once: a repeated end event fails the condition and releases
        nothing. A job that no longer counts (or a counter already at 0, which the
        reconciler repairs) ends without a release.
        """
        owner = self._owner(job_name)
        if owner is None:
            return None
        sets = {**sets}
        if "status" in sets:
            sets[STATUS_KEY] = status_key(owner, sets["status"])
        names = {f"#{i}": key for i, key in enumerate(sets)}
        names["#active"] = ACTIVE_ATTRIBUTE
        values = {f":{i}": value for i, value in enumerate(sets.values())}
        expression = "SET " + ", ".join(f"#{i} = :{i}" for i in range(len(sets)))
        expression += " REMOVE #active"
        built = _condition_expression(
            condition & Attr("job_name").exists() & Attr(ACTIVE_ATTRIBUTE).eq(owner)
        )
        update = {
            "Update": {
                "TableName": self.table_name,
                "Key": {"job_name": {"S": job_name}},
                "UpdateExpression": expression,
                "ConditionExpression": built["ConditionExpression"],
                "ExpressionAttributeNames": {**names, **built["ExpressionAttributeNames"]},
                "ExpressionAttributeValues": _serialize(
                    {**values, **built["ExpressionAttributeValues"]}
                ),
            }
        }
        reasons = _transact([update, _release(self.counts_table_name, owner)])
        if reasons is None:
            return self.get(job_name)
        if reasons[1] == "ConditionalCheckFailed" and reasons[0] in ("None", ""):
            logger.warning("active job count already 0 at a job's end", extra={"owner": owner})
        # Not counted (any more), or the end is stale or repeated: as an ordinary update.
        return self._update(job_name, sets, condition, removes=(ACTIVE_ATTRIBUTE,))

    def repair_counts(self, *, settled_seconds: int = 60) -> int:
        """Set every owner's counter to the number of its jobs that still count; how many
        counters were wrong.

        The active index is eventually consistent, so an owner is repaired only when its
        counter has not changed for `settled_seconds` (by then the index has caught up),
        and the write is conditional on the counter still being what was read.
        """
        actual: dict[str, int] = {}
        kwargs: dict[str, Any] = {"IndexName": ACTIVE_INDEX}
        while True:
            page = self.table.scan(**kwargs)
            for item in page.get("Items", []):
                owner = str(item[ACTIVE_ATTRIBUTE])
                actual[owner] = actual.get(owner, 0) + 1
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        counters: dict[str, tuple[int, str]] = {}
        client = aws.client("dynamodb")
        scan: dict[str, Any] = {"TableName": self.counts_table_name, "ConsistentRead": True}
        while True:
            page = client.scan(**scan)
            for item in page.get("Items", []):
                counters[item["owner"]["S"]] = (
                    int(item.get("active", {}).get("N", "0")),
                    item.get("changed_at", {}).get("S", ""),
                )
            if "LastEvaluatedKey" not in page:
                break
            scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        settled = timefmt.to_iso(timefmt.now() - timedelta(seconds=settled_seconds))
        repaired = 0
        for owner in sorted(set(actual) | set(counters)):
            count, changed_at = counters.get(owner, (0, ""))
            if count == actual.get(owner, 0) or changed_at > settled:
                continue
            if owner in counters:
                condition = "active = :was AND changed_at = :changed"
                values = {":was": {"N": str(count)}, ":changed": {"S": changed_at}}
                if not changed_at:
                    condition = "active = :was AND attribute_not_exists(changed_at)"
                    values = {":was": {"N": str(count)}}
            else:
                condition, values = "attribute_not_exists(active)", {}
            try:
                client.update_item(
                    TableName=self.counts_table_name,
                    Key={"owner": {"S": owner}},
                    UpdateExpression="SET active = :count, changed_at = :now",
                    ConditionExpression=condition,
                    ExpressionAttributeValues={
                        **values,
                        ":count": {"N": str(actual.get(owner, 0))},
                        ":now": {"S": timefmt.to_iso(timefmt.now())},
                    },
                )
            except ClientError as exc:
                if _conditional_failed(exc):
                    continue  # it changed meanwhile: the next sweep looks again
                raise
            logger.warning(
                "repaired an owner's active job count",
                extra={"owner": owner, "was": count, "count": actual.get(owner, 0)},
            )
            repaired += 1
        return repaired

    def _update(
        self,
        job_name: str,
        sets: dict[str, Any],
        condition: Any = None,
        removes: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """SET (and REMOVE) fields if `condition` holds; the new item, or None if it did not.

        A new status moves the job in the status index in the same write.
        """
        if "status" in sets and STATUS_KEY not in sets:
            owner = self._owner(job_name)
            if owner is None:
                return None
            sets = {**sets, STATUS_KEY: status_key(owner, sets["status"])}
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

    def mark_starting(
        self,
        job_name: str,
        *,
        staging: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> dict[str, Any] | None:
        """Staging is done; claim the job for CreateTrainingJob unless a stop came first.

        With `staging` and `owner`, the final checkpoint is written in the same update, if
        that staging invocation still owns the job.
        """
        condition = Attr("secondary_status").eq("Staging") & (
            Attr("stop_requested").not_exists() | Attr("stop_requested").eq(False)
        )
        sets: dict[str, Any] = {"secondary_status": "Starting"}
        if staging is not None:
            sets["staging"] = staging
        if owner is not None:
            condition = condition & Attr("staging.owner").eq(owner)
        return self._update(job_name, sets, condition)

    # -- staging checkpoints ---------------------------------------------------------------
    # A job being staged holds a `staging` map: its checkpoint (where the next invocation goes
    # on, the shards written so far and the counts) and the token of the invocation that owns
    # it. Every later write of that invocation is conditional on still owning it, so a second
    # invocation for the same job (a duplicate message) takes over and the first one stops.
    def _staging_update(
        self,
        job_name: str,
        sets: dict[str, Any],
        condition: Any,
        *,
        owner_only: bool = False,
    ) -> dict[str, Any] | None:
        """SET fields of a job being staged if `condition` holds; the new item, or None."""
        names = {"#staging": "staging", "#owner": "owner"} if owner_only else {}
        values: dict[str, Any] = {}
        assignments = []
        for i, (field, value) in enumerate(sets.items()):
            values[f":s{i}"] = value
            if owner_only:
                assignments.append(f"#staging.#owner = :s{i}")
            else:
                names[f"#f{i}"] = field
                assignments.append(f"#f{i} = :s{i}")
        try:
            answer = self.table.update_item(
                Key={"job_name": job_name},
                UpdateExpression="SET " + ", ".join(assignments),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ConditionExpression=condition
                & Attr("job_name").exists()
                & Attr("secondary_status").eq("Staging")
                & ~Attr("status").is_in(list(TERMINAL_STATUSES)),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return _plain(answer["Attributes"])

    def claim_staging(
        self, job_name: str, token: str, continuation: int, initial: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Own the job's staging for continuation number `continuation`.

        With `initial` (the job has no checkpoint yet) the checkpoint is created; otherwise
        the existing one is taken over if its continuation number matches. None if not.
        """
        if initial is not None:
            return self._staging_update(
                job_name, {"staging": {**initial, "owner": token}}, Attr("staging").not_exists()
            )
        return self._staging_update(
            job_name,
            {"owner": token},
            Attr("staging.continuations").eq(continuation),
            owner_only=True,
        )

    def checkpoint_staging(
        self, job_name: str, token: str, state: dict[str, Any], progress: dict[str, int]
    ) -> dict[str, Any] | None:
        """Replace the checkpoint (and the progress fields) if this invocation still owns it."""
        return self._staging_update(
            job_name,
            {"staging": {**state, "owner": token}, **progress, **_progress_mark()},
            Attr("staging.owner").eq(token),
        )

    def staging_progress(
        self, job_name: str, token: str, progress: dict[str, int]
    ) -> dict[str, Any] | None:
        """Publish progress (and read the job back, stop flag included) while owning it."""
        return self._staging_update(
            job_name, {**progress, **_progress_mark()}, Attr("staging.owner").eq(token)
        )

    def mark_sagemaker_created(self, job_name: str) -> dict[str, Any] | None:
        return self._update(job_name, {"sagemaker_job": True})

    # -- waiting for capacity --------------------------------------------------------------
    # A job that waits for capacity has secondary_status Queued and `queued_at`. With the
    # batch scheduler it also has `batch_job_id`, its AWS Batch service job; once Batch has
    # started it, `training_job_arn`, and from SageMaker's first event `sagemaker_job` and
    # `training_job_name` (Batch names the training job itself). Each write is conditional,
    # so a repeated or late event is harmless.
    def mark_submitted(
        self, job_name: str, batch_job_id: str, queued_at: str
    ) -> dict[str, Any] | None:
        """The job is in the Batch job queue; None if it has ended or already moved on."""
        condition = (
            Attr("secondary_status").is_in(["Starting", "Queued"])
            & Attr("sagemaker_job").not_exists()
            & ~Attr("status").is_in(list(TERMINAL_STATUSES))
        )
        return self._update(
            job_name,
            {"batch_job_id": batch_job_id, "secondary_status": "Queued", "queued_at": queued_at},
            condition,
        )

    def mark_waiting(self, job_name: str, queued_at: str, attempts: int) -> dict[str, Any] | None:
        """SageMaker had no capacity (direct scheduler): the job waits for its next attempt.

        None if a stop came first or the job has ended. The progress mark tells the
        reconciler that the job is still moving.
        """
        condition = (
            Attr("secondary_status").is_in(["Starting", "Queued"])
            & (Attr("stop_requested").not_exists() | Attr("stop_requested").eq(False))
            & ~Attr("status").is_in(list(TERMINAL_STATUSES))
        )
        return self._update(
            job_name,
            {
                "secondary_status": "Queued",
                "queued_at": queued_at,
                "capacity_attempts": attempts,
                **_progress_mark(),
            },
            condition,
        )

    def claim_queued(self, job_name: str) -> dict[str, Any] | None:
        """Take a job that waited for capacity (direct scheduler) to create its training job."""
        condition = (
            Attr("secondary_status").eq("Queued")
            & Attr("batch_job_id").not_exists()
            & (Attr("stop_requested").not_exists() | Attr("stop_requested").eq(False))
            & ~Attr("status").is_in(list(TERMINAL_STATUSES))
        )
        return self._update(job_name, {"secondary_status": "Starting"}, condition)

    def batch_queued(
        self, job_name: str, batch_job_id: str, queued_at: str
    ) -> dict[str, Any] | None:
        """A Batch event: the service job waits in the queue. A late one, after Batch has
        started the job (its training job's ARN is known) or SageMaker has it, changes nothing."""
        condition = (
            Attr("secondary_status").is_in(["Starting", "Queued"])
            & Attr("sagemaker_job").not_exists()
            & Attr("training_job_arn").not_exists()
            & ~Attr("status").is_in(list(TERMINAL_STATUSES))
        )
        return self._update(
            job_name,
            {"batch_job_id": batch_job_id, "secondary_status": "Queued", "queued_at": queued_at},
            condition,
        )

    def batch_started(
        self,
        job: dict[str, Any],
        *,
        training_job_arn: str | None,
        secondary_status: str | None,
        training_start_time: str | None,
    ) -> dict[str, Any] | None:
        """A Batch event: the job (as just read) has left the queue and SageMaker has, or is
        about to have, it. The new item, or None if nothing changed.

        The secondary status moves only while no SageMaker event has set its own; the start
        time is written once. The training job's name comes from SageMaker's own events (an
        ARN holds it in lower case only).
        """
        sets: dict[str, Any] = {}
        if training_job_arn and job.get("training_job_arn") != training_job_arn:
            sets["training_job_arn"] = training_job_arn
        if training_start_time and not job.get("training_start_time"):
            sets["training_start_time"] = training_start_time
        if secondary_status and job.get("secondary_status") == "Queued":
            sets["secondary_status"] = secondary_status
        if not sets:
            return None
        condition: Any = ~Attr("status").is_in(list(TERMINAL_STATUSES))
        if "secondary_status" in sets:
            condition = condition & Attr("secondary_status").eq("Queued")
        return self._update(job["job_name"], sets, condition)

    def record_training_name(self, job_name: str, training_job_name: str) -> None:
        """The SageMaker training job Batch started, found by the reconciler."""
        self._update(
            job_name,
            {"training_job_name": training_job_name, "sagemaker_job": True},
            ~Attr("status").is_in(list(TERMINAL_STATUSES)),
        )

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
        return self._end(job_name, sets, ~Attr("status").is_in(list(TERMINAL_STATUSES)))

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
        sets = {**fields, "last_event_time": event_millis}
        if terminal:
            # A job that has ended no longer counts against its owner's active jobs.
            return self._end(job_name, sets, condition)
        return self._update(job_name, sets, condition)

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
                    "callback_started_at": now_iso,
                    "callback_attempts": 0,
                },
                condition,
            )
            is not None
        )

    def record_delivery(
        self,
        job_name: str,
        state: str,
        attempts: int,
        error: str | None = None,
        *,
        last_attempt_at: str | None = None,
        next_attempt_at: str | None = None,
        generation: int | None = None,
    ) -> None:
        """Record how delivery stands. With `generation`, only while no replay superseded it."""
        sets: dict[str, Any] = {"callback_state": state, "callback_attempts": attempts}
        removes: list[str] = []
        if error:
            sets["callback_last_error"] = error
        else:
            removes.append("callback_last_error")
        if last_attempt_at:
            sets["callback_last_attempt_at"] = last_attempt_at
        if next_attempt_at:
            sets["callback_next_attempt_at"] = next_attempt_at
        else:
            removes.append("callback_next_attempt_at")
        if state in ("delivered", "failed"):
            removes.append(SWEEP_KEY)  # settled: the reconciler has nothing left to do
        condition: Any = None
        if generation is not None:
            condition = Attr("callback_generation").eq(generation)
            if generation == 0:
                condition = condition | Attr("callback_generation").not_exists()
        self._update(job_name, sets, condition, removes=tuple(removes))

    def restart_callback(self, job_name: str, now_iso: str) -> int | None:
        """Start a new generation of a finished job's callback (a replay); its number."""
        generation = int((self.get(job_name) or {}).get("callback_generation", 0)) + 1
        updated = self._update(
            job_name,
            {
                "callback_generation": generation,
                "callback_state": "sending",
                "callback_claimed_at": now_iso,
                "callback_started_at": now_iso,
                "callback_attempts": 0,
                SWEEP_KEY: SWEEP_OPEN,
            },
            Attr("status").is_in(list(TERMINAL_STATUSES))
            & (
                Attr("callback_generation").not_exists()
                | Attr("callback_generation").eq(generation - 1)
            ),
            removes=("callback_last_error", "callback_next_attempt_at"),
        )
        return generation if updated is not None else None

    def sweep_candidates(self) -> list[str]:
        """Jobs whose end or callback is not settled, from the sparse sweep index."""
        names: list[str] = []
        kwargs: dict[str, Any] = {
            "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": Key(SWEEP_KEY).eq(SWEEP_OPEN),
        }
        while True:
            page = self.table.query(**kwargs)
            names.extend(str(item["job_name"]) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return names
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def settle_sweep(self, job_name: str) -> None:
        """Take a job out of the sweep index."""
        self.table.update_item(
            Key={"job_name": job_name},
            UpdateExpression="REMOVE #sweep",
            ExpressionAttributeNames={"#sweep": SWEEP_KEY},
        )

    def mark_staging_requeued(self, job_name: str, now_iso: str) -> bool:
        """Record that the reconciler re-queued a stuck staging job, once."""
        return (
            self._update(
                job_name,
                {"staging_requeued_at": now_iso},
                Attr("secondary_status").is_in(["Staging", "Starting"])
                & Attr("staging_requeued_at").not_exists(),
            )
            is not None
        )

    def record_cost(self, job_name: str, fields: dict[str, Any]) -> None:
        """What an ended job cost (training_seconds, billable_seconds, spot, spot_savings)."""
        self._update(job_name, {k: _dynamo_number(v) for k, v in fields.items()})

    def backfill_status_key(self, *, segment: int = 0, total_segments: int = 1) -> int:
        """Give jobs written before the status index their STATUS_KEY; how many were given it.

        Safe to run at any time and more than once, in parallel segments: a job is written
        only while it still lacks the key and still has the status read, so a status change
        racing the backfill (which writes the key itself) always wins.
        """
        kwargs: dict[str, Any] = {
            "FilterExpression": Attr(STATUS_KEY).not_exists() & Attr("status").exists(),
            "ProjectionExpression": "#name, #owner, #status",
            "ExpressionAttributeNames": {
                "#name": "job_name",
                "#owner": "owner",
                "#status": "status",
            },
            "Segment": segment,
            "TotalSegments": total_segments,
        }
        written = 0
        while True:
            page = self.table.scan(**kwargs)
            for item in page.get("Items", []):
                if "owner" not in item:
                    continue
                try:
                    self.table.update_item(
                        Key={"job_name": item["job_name"]},
                        UpdateExpression="SET #key = :key",
                        ConditionExpression=Attr(STATUS_KEY).not_exists()
                        & Attr("status").eq(item["status"]),
                        ExpressionAttributeNames={"#key": STATUS_KEY},
                        ExpressionAttributeValues={
                            ":key": status_key(str(item["owner"]), str(item["status"]))
                        },
                    )
                    written += 1
                except ClientError as exc:
                    if not _conditional_failed(exc):
                        raise
            if "LastEvaluatedKey" not in page:
                return written
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def save_report(self, job_name: str, report: dict[str, Any]) -> None:
        """Keep the evaluation report (the callback's `log`) for check_training_status."""
        self._update(job_name, {"report": report})

    def save_progress(
        self, job_name: str, progress: dict[str, Any] | None, checked_at: str
    ) -> None:
        """Cache a training job's progress on its record, unless a newer reading is there."""
        self._update(
            job_name,
            {
                "progress": (
                    {k: _dynamo_number(v) for k, v in progress.items()} if progress else None
                ),
                "progress_checked_at": checked_at,
            },
            Attr("progress_checked_at").not_exists() | Attr("progress_checked_at").lt(checked_at),
        )


def _progress_mark() -> dict[str, str]:
    """When staging last moved: the reconciler leaves staging that is still moving alone."""
    return {"staging_progress_at": timefmt.to_iso(timefmt.now())}


def _dynamo_number(value: Any) -> Any:
    """DynamoDB takes Decimal, not float."""
    return Decimal(str(value)) if isinstance(value, float) else value


_serializer = TypeSerializer()
_TRANSACTION_ATTEMPTS = 5


def _serialize(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(_dynamo_number(v)) for k, v in values.items()}


def _condition_expression(condition: Any) -> dict[str, Any]:
    """A boto3 condition as the low-level client takes it (expression, names, values)."""
    built = ConditionExpressionBuilder().build_expression(condition)
    return {
        "ConditionExpression": built.condition_expression,
        "ExpressionAttributeNames": built.attribute_name_placeholders,
        "ExpressionAttributeValues": built.attribute_value_placeholders,
    }


def _release(counts_table: str, owner: str) -> dict[str, Any]:
    """One job of `owner` no longer counts: its counter goes down by one (never below 0)."""
    return {
        "Update": {
            "TableName": counts_table,
            "Key": {"owner": {"S": owner}},
            "UpdateExpression": "SET active = active - :one, changed_at = :now",
            "ConditionExpression": "active >= :one",
            "ExpressionAttributeValues": {
                ":one": {"N": "1"},
                ":now": {"S": timefmt.to_iso(timefmt.now())},
            },
        }
    }


def _transact(items: list[dict[str, Any]]) -> list[str] | None:
    """TransactWriteItems; None when it was applied, else each item's cancellation reason.

    A transaction that lost a race with another one on the same item (TransactionConflict)
    is tried again, with a short jittered pause, a few times.
    """
    client = aws.client("dynamodb")
    for attempt in range(_TRANSACTION_ATTEMPTS):
        try:
            client.transact_write_items(TransactItems=items)
            return None
        except ClientError as exc:
            if aws.error_code(exc) != "TransactionCanceledException":
                raise
            reasons = [
                str(reason.get("Code", "None"))
                for reason in exc.response.get("CancellationReasons", [])
            ]
            if "TransactionConflict" not in reasons or attempt == _TRANSACTION_ATTEMPTS - 1:
                return reasons + ["None"] * (len(items) - len(reasons))
        time.sleep(random.uniform(0, 0.02 * 2**attempt))  # noqa: S311 - jitter, not secrecy
    raise AssertionError("unreachable")
