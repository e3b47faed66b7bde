"""aifactory-admin: the operator's console for a deployed Factory or the local one.

    aifactory-admin --stack aifactory tenants
    aifactory-admin --local keys issue --tenant acme
    aifactory-admin --stack aifactory keys rotate --tenant acme
    aifactory-admin --stack aifactory keys revoke KEY_ID
    aifactory-admin --stack aifactory jobs --tenant acme --status Failed
    aifactory-admin --stack aifactory callbacks failed
    aifactory-admin --stack aifactory dlq show callback
    aifactory-admin --stack aifactory dlq redrive stage

A deployed stack is found by name through its CloudFormation outputs (AWS credentials and
region from the usual places, or --region); the local Factory through the ready file it
writes in its state dir while it runs: `--local` alone reads .aifactory/ready.json (the state
dir of `make run`), `--local DIR` another's. Every command prints a table, or JSON
with --json. A key's value is printed once, when it is issued, and never again.

The local Factory's own keys (--api-key, or the one it generated) are listed too; they are
not revoked here, since the Factory accepts them as long as it runs with them.
"""

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import EndpointConnectionError
from rich.table import Table

from aifactory.statuses import STATUSES
from aifactory.store import OWNER_INDEX
from aifactory.tenants import LOCAL_KEY_TAG, TENANT_TAG
from aifactory_client.tables import new_console, print_table

# What an operator calls each dead-letter queue, and where its messages go back to.
DLQS = {
    "stage": ("StageDLQUrl", "StageQueueUrl"),
    "callback": ("CallbackDLQUrl", "CallbackRetryQueueUrl"),
    "notify": ("NotifyDLQUrl", None),
}
# Tag values API Gateway accepts, kept to what reads well in a table and a log line.
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}$")
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
# Where `aifactory-local serve` (make run) keeps its ready file while it runs.
DEFAULT_READY_FILE = ".aifactory/ready.json"
COMMANDS = ("tenants", "keys", "jobs", "callbacks", "dlq")


class AdminError(Exception):
    """A refusal the operator can act on; printed without a traceback."""


@dataclass
class Stack:
    """The resources of one Factory, by the names of the stack's outputs."""

    outputs: dict[str, str]
    session: boto3.Session
    endpoint_url: str | None = None
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]
        return self._clients[service]

    def table(self) -> Any:
        return self.session.resource("dynamodb", endpoint_url=self.endpoint_url).Table(  # type: ignore[call-overload]
            self.outputs["JobsTableName"]
        )

    @classmethod
    def deployed(cls, name: str, region: str | None) -> "Stack":
        session = boto3.Session(region_name=region)
        try:
            found = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        except Exception as exc:
            raise AdminError(f"stack {name}: {exc}") from None
        outputs = {o["OutputKey"]: o["OutputValue"] for o in found[0].get("Outputs", [])}
        return cls(outputs, session)

    @classmethod
    def local(cls, ready_file: str) -> "Stack":
        path = Path(ready_file)
        if path.is_dir():  # a state dir
            path = path / "ready.json"
        try:
            facts = json.loads(path.read_text())
        except FileNotFoundError:
            raise AdminError(
                f"--local: no {path}, so no local Factory runs there: the Factory writes "
                "ready.json in its state dir while it runs (make run: .aifactory/ready.json); "
                "for another state dir give --local DIR"
            ) from None
        except (OSError, ValueError) as exc:
            raise AdminError(f"--local {ready_file}: {exc}") from None
        session = boto3.Session(
            region_name="us-east-1",
            aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
        )
        stack = cls({"JobsTableName": facts["table"]}, session, facts["aws_endpoint_url"])
        # The local Factory names its queues after its table: <prefix>-jobs, <prefix>-stage-dlq.
        prefix = facts["table"].removesuffix("-jobs")
        sqs = stack.client("sqs")
        for output, queue in (
            ("StageQueueUrl", "stage"),
            ("StageDLQUrl", "stage-dlq"),
            ("CallbackRetryQueueUrl", "callback-retry"),
            ("CallbackDLQUrl", "callback-dlq"),
        ):
            try:
                stack.outputs[output] = sqs.get_queue_url(QueueName=f"{prefix}-{queue}")["QueueUrl"]
            except Exception:  # noqa: S112 - a queue the local Factory does not have
                continue
        return stack


# -- output ------------------------------------------------------------------------------------
def _emit(args: argparse.Namespace, title: str, rows: list[dict[str, Any]], note: str = "") -> None:
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return
    console = new_console(highlight=True)
    table = Table(title=title)
    columns = list(rows[0]) if rows else ["(none)"]
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    print_table(console, table)  # a narrow terminal wraps between words, never inside one
    if note:
        console.print(note)


# -- keys and tenants --------------------------------------------------------------------------
def _keys(stack: Stack) -> Iterator[dict[str, Any]]:
    paginator = stack.client("apigateway").get_paginator("get_api_keys")
    for page in paginator.paginate(includeValues=False):
        yield from page.get("items", [])


def _tenant_of(key: dict[str, Any]) -> str:
    return str((key.get("tags") or {}).get(TENANT_TAG) or key["id"])


def _key_row(key: dict[str, Any]) -> dict[str, Any]:
    created = key.get("createdDate")
    return {
        "key_id": key["id"],
        "name": key.get("name"),
        "tenant": _tenant_of(key),
        "enabled": bool(key.get("enabled")),
        "created": created.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(created, datetime)
        else created,
    }


def _check_tenant(tenant: str) -> str:
    if not TENANT_PATTERN.match(tenant):
        raise AdminError(
            "--tenant: 1-128 characters, letters, digits and _ . : @ + = -, "
            "starting with a letter or digit"
        )
    return tenant


def _active_jobs(stack: Stack, tenant: str) -> int:
    count, params = (
        0,
        {
            "IndexName": "owner-active-index",
            "KeyConditionExpression": Key("active_owner").eq(tenant),
            "Select": "COUNT",
        },
    )
    table = stack.table()
    while True:
        page = table.query(**params)
        count += int(page.get("Count", 0))
        if not page.get("LastEvaluatedKey"):
            return count
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def cmd_tenants(stack: Stack, args: argparse.Namespace) -> int:
    tenants: dict[str, list[str]] = {}
    for key in _keys(stack):
        if key.get("enabled"):
            tenants.setdefault(_tenant_of(key), []).append(key["id"])
    rows = [
        {
            "tenant": tenant,
            "keys": len(ids),
            "key_ids": ", ".join(sorted(ids)),
            "active_jobs": _active_jobs(stack, tenant),
        }
        for tenant, ids in sorted(tenants.items())
    ]
    _emit(args, "Tenants (enabled keys)", rows)
    return 0


def _issue(stack: Stack, tenant: str) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    client = stack.client("apigateway")
    key = client.create_api_key(
        name=f"{tenant}-{stamp}"[:128],
        description=f"AI Factory key of tenant {tenant}",
        enabled=True,
        tags={TENANT_TAG: tenant},
    )
    plan = stack.outputs.get("UsagePlanId")
    if plan:  # metered and throttled like every client key
        client.create_usage_plan_key(usagePlanId=plan, keyId=key["id"], keyType="API_KEY")
    return {"key_id": key["id"], "tenant": tenant, "value": key["value"]}


def cmd_keys_issue(stack: Stack, args: argparse.Namespace) -> int:
    issued = _issue(stack, _check_tenant(args.tenant))
    _emit(args, "New API key", [issued], "The value is shown only now: give it to the client.")
    return 0


def cmd_keys_rotate(stack: Stack, args: argparse.Namespace) -> int:
    tenant = _check_tenant(args.tenant)
    keys = [k for k in _keys(stack) if _tenant_of(k) == tenant and k.get("enabled")]
    old = [k["id"] for k in keys]
    if args.revoke_old:  # refused before a new key is issued: nothing half done
        for key in keys:
            if _local_factory_key(key):
                raise _refuse_local_factory_key(key)
    issued = _issue(stack, tenant)
    revoked = []
    if args.revoke_old:
        for key_id in old:
            stack.client("apigateway").delete_api_key(apiKey=key_id)
            revoked.append(key_id)
    row = {**issued, "previous_keys": ", ".join(old), "revoked": ", ".join(revoked)}
    note = "The value is shown only now. " + (
        "The previous keys are revoked."
        if args.revoke_old
        else "Once the client uses it, revoke the previous keys: aifactory-admin keys revoke ID"
    )
    _emit(args, f"Rotated key of tenant {tenant}", [row], note)
    return 0


def _local_factory_key(key: dict[str, Any]) -> bool:
    return bool((key.get("tags") or {}).get(LOCAL_KEY_TAG))


def _refuse_local_factory_key(key: dict[str, Any]) -> AdminError:
    return AdminError(
        f"key {key['id']} ({key.get('name')}) is the local Factory's own key, given with "
        "--api-key or generated into its state dir's api-keys.json: the Factory accepts it as "
        "long as it runs with it. Restart the Factory with other --api-key keys to retire it"
    )


def cmd_keys_revoke(stack: Stack, args: argparse.Namespace) -> int:
    client = stack.client("apigateway")
    try:
        key = client.get_api_key(apiKey=args.key_id, includeValue=False)
    except client.exceptions.NotFoundException:
        raise AdminError(f"no API key with id {args.key_id}") from None
    if _local_factory_key(key):
        raise _refuse_local_factory_key(key)
    # Deleted, the key is refused by the gateway at once; its tenant's jobs stay theirs.
    client.delete_api_key(apiKey=args.key_id)
    _emit(args, "Revoked", [{"key_id": args.key_id, "tenant": _tenant_of(key), "revoked": True}])
    return 0


def cmd_keys_list(stack: Stack, args: argparse.Namespace) -> int:
    rows = [_key_row(k) for k in _keys(stack)]
    if args.tenant:
        rows = [r for r in rows if r["tenant"] == args.tenant]
    _emit(args, "API keys", sorted(rows, key=lambda r: (r["tenant"], str(r["created"]))))
    return 0


# -- jobs --------------------------------------------------------------------------------------
def _job_row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_name": item["job_name"],
        "tenant": item.get("owner"),
        "status": item.get("status"),
        "secondary_status": item.get("secondary_status"),
        "created_at": item.get("created_at"),
        "ended_at": item.get("training_end_time"),
        "callback": item.get("callback_state") or "pending",
        "callback_error": item.get("callback_last_error"),
    }


def _query_all(table: Any, **params: Any) -> Iterator[dict[str, Any]]:
    while True:
        page = table.query(**params) if "KeyConditionExpression" in params else table.scan(**params)
        yield from page.get("Items", [])
        if not page.get("LastEvaluatedKey"):
            return
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def cmd_jobs(stack: Stack, args: argparse.Namespace) -> int:
    table = stack.table()
    params: dict[str, Any] = {}
    if args.status:
        params["FilterExpression"] = Attr("status").eq(args.status)
    if args.tenant:  # the tenant's index, newest first
        params.update(
            IndexName=OWNER_INDEX,
            KeyConditionExpression=Key("owner").eq(args.tenant),
            ScanIndexForward=False,
        )
    # Without a tenant: every job, which reads the whole table (an operator's question).
    rows = [_job_row(item) for item in _query_all(table, **params)]
    rows.sort(key=lambda r: str(r["created_at"]), reverse=True)
    _emit(args, "Jobs", rows[: args.limit])
    return 0


def cmd_callbacks_failed(stack: Stack, args: argparse.Namespace) -> int:
    # Failed callbacks are settled, so no index holds them: this reads the whole table.
    items = _query_all(stack.table(), FilterExpression=Attr("callback_state").eq("failed"))
    rows = sorted((_job_row(i) for i in items), key=lambda r: str(r["ended_at"]), reverse=True)
    _emit(
        args,
        "Jobs whose callback failed",
        rows,
        "Send one again once the client's receiver is fixed: POST /redeliver_callback "
        "(with the tenant's key), or `aifactory-admin dlq redrive callback`.",
    )
    return 0


# -- dead-letter queues ------------------------------------------------------------------------
def _dlq(stack: Stack, name: str) -> tuple[str, str | None]:
    dlq_output, source_output = DLQS[name]
    url = stack.outputs.get(dlq_output)
    if not url:
        raise AdminError(f"dlq {name}: this Factory has no such queue")
    return url, stack.outputs.get(source_output) if source_output else None


def cmd_dlq_show(stack: Stack, args: argparse.Namespace) -> int:
    url, _ = _dlq(stack, args.name)
    sqs = stack.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    # A peek: the messages become visible again at once, and a DLQ has no redrive to count.
    peeked = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["All"]
    ).get("Messages", [])
    rows = []
    for message in peeked:
        try:
            body = json.loads(message["Body"])
        except ValueError:
            body = {}
        sent = int(message.get("Attributes", {}).get("SentTimestamp", 0)) / 1000
        rows.append(
            {
                "message_id": message["MessageId"],
                "job_name": body.get("job_name") if isinstance(body, dict) else None,
                "sent_at": datetime.fromtimestamp(sent, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            }
        )
    if args.json:
        print(
            json.dumps(
                {
                    "queue": args.name,
                    "messages": int(attributes.get("ApproximateNumberOfMessages", 0)),
                    "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                    "sample": rows,
                },
                indent=2,
            )
        )
        return 0
    count = attributes.get("ApproximateNumberOfMessages", "0")
    _emit(args, f"{args.name} dead-letter queue: about {count} messages", rows)
    return 0


def cmd_dlq_redrive(stack: Stack, args: argparse.Namespace) -> int:
    url, source = _dlq(stack, args.name)
    if source is None:
        raise AdminError(
            f"dlq {args.name}: its messages are events, not a queue's; the reconciler applies "
            "the training ends they carried. Inspect them with `dlq show`, then purge."
        )
    sqs = stack.client("sqs")
    moved = 0
    while messages := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60
    ).get("Messages"):
        # Sent before deleted: a crash in between repeats a message, never loses one (and
        # both consumers ignore a repeat).
        sqs.send_message_batch(
            QueueUrl=source,
            Entries=[{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(messages)],
        )
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
        moved += len(messages)
    _emit(args, "Redriven", [{"queue": args.name, "moved": moved}])
    return 0


# -- the command line --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser = argparse.ArgumentParser(
        prog="aifactory-admin",
        description="Operate an AI Factory: tenants and their API keys, jobs, failed callbacks "
        "and dead-letter queues.",
        parents=[common],
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="name of a deployed stack (CloudFormation outputs)")
    where.add_argument(
        "--local",
        metavar="READY_FILE",
        nargs="?",
        const=DEFAULT_READY_FILE,
        help=f"the local Factory's ready file (default {DEFAULT_READY_FILE}, which `make run` "
        "writes; DIR or DIR/ready.json for a Factory started with --state-dir DIR)",
    )
    parser.add_argument("--region", help="AWS region of the stack (default: your configuration)")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "tenants", parents=[common], help="tenants, their keys and active jobs"
    ).set_defaults(run=cmd_tenants)

    keys = commands.add_parser("keys", help="issue, rotate, revoke and list API keys")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    issue = key_commands.add_parser("issue", parents=[common], help="a new key for a tenant")
    issue.add_argument("--tenant", required=True)
    issue.set_defaults(run=cmd_keys_issue)
    rotate = key_commands.add_parser("rotate", parents=[common], help="a new key; old ones listed")
    rotate.add_argument("--tenant", required=True)
    rotate.add_argument(
        "--revoke-old", action="store_true", help="revoke the tenant's other keys at once"
    )
    rotate.set_defaults(run=cmd_keys_rotate)
    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke a key at once")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=cmd_keys_revoke)
    listing = key_commands.add_parser("list", parents=[common], help="every key and its tenant")
    listing.add_argument("--tenant")
    listing.set_defaults(run=cmd_keys_list)

    jobs = commands.add_parser("jobs", parents=[common], help="jobs, newest first")
    jobs.add_argument("--tenant")
    jobs.add_argument("--status", choices=STATUSES)
    jobs.add_argument("--limit", type=int, default=100)
    jobs.set_defaults(run=cmd_jobs)

    callbacks = commands.add_parser("callbacks", help="callback deliveries")
    callback_commands = callbacks.add_subparsers(dest="callback_command", required=True)
    callback_commands.add_parser(
        "failed", parents=[common], help="jobs whose callback failed"
    ).set_defaults(run=cmd_callbacks_failed)

    dlq = commands.add_parser("dlq", help="dead-letter queues")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    for action, run, text in (
        ("show", cmd_dlq_show, "how many messages, and a sample"),
        ("redrive", cmd_dlq_redrive, "move every message back to its queue"),
    ):
        sub = dlq_commands.add_parser(action, parents=[common], help=text)
        sub.add_argument("name", choices=sorted(DLQS))
        sub.set_defaults(run=run)
    return parser


def _default_ready_file(argv: list[str]) -> list[str]:
    """`--local` followed by the command (no path): the ready file of `make run`. argparse
    alone would take the command's name for the path."""
    for i, arg in enumerate(argv):
        if arg in COMMANDS:
            break  # what follows is the command's
        if arg == "--local":
            following = argv[i + 1] if i + 1 < len(argv) else "-"
            if following.startswith("-") or following in COMMANDS:
                return [*argv[: i + 1], DEFAULT_READY_FILE, *argv[i + 1 :]]
            break
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_default_ready_file(given))
    args.json = getattr(args, "json", False)
    try:
        stack = Stack.local(args.local) if args.local else Stack.deployed(args.stack, args.region)
        return int(args.run(stack, args))
    except AdminError as exc:
        print(f"aifactory-admin: {exc}", file=sys.stderr)
        return 2
    except EndpointConnectionError as exc:
        where = (
            f"the local Factory of {args.local} ({exc.kwargs.get('endpoint_url')}): is it still "
            "running? A Factory killed outright leaves its ready file behind"
            if args.local
            else str(exc)
        )
        print(f"aifactory-admin: cannot reach {where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
