"""SQS event source mappings: poll a queue and invoke a function as Lambda's pollers do.

Each poller receives up to BatchSize messages (with every system attribute, so
ApproximateReceiveCount is set), builds Lambda's SQS event, and invokes the function. With
ReportBatchItemFailures, the messages not named in batchItemFailures are deleted; the
others stay on the queue until their visibility timeout ends, and the queue's redrive
policy (applied by the emulator) moves them to the dead-letter queue in the end. A function
error leaves the whole batch on the queue.
"""

import base64
import hashlib
import logging
import threading
from typing import Any

from aifactory_local.lambdas import LocalFunction
from aifactory_local.provision import REGION

log = logging.getLogger("aifactory_local.pollers")

# Long polling keeps the queue quiet; it also bounds how long a stop waits for a poller.
WAIT_SECONDS = 1


def lambda_sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One record of Lambda's SQS event, from a ReceiveMessage result."""
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attribute: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
        if "StringValue" in value:
            attribute["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        attributes[name] = attribute
    body = message["Body"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


class SqsEventSource:
    """One event source mapping: `concurrency` pollers feeding one function."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        function: LocalFunction,
        *,
        batch_size: int = 10,
        report_batch_item_failures: bool = False,
        concurrency: int = 2,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.function = function
        self.batch_size = batch_size
        self.report_failures = report_batch_item_failures
        self.concurrency = concurrency
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.concurrency):
            thread = threading.Thread(
                target=self._run, name=f"sqs-{self.function.name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def request_stop(self) -> None:
        """Stop polling; stop() then waits for the pollers (a poll ends within WAIT_SECONDS)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("polling %s failed", self.queue_url)
                self._stop.wait(1.0)

    def poll_once(self) -> int:
        """Receive one batch and hand it to the function; the number of messages received."""
        received = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=WAIT_SECONDS,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = received.get("Messages") or []
        if not messages or self._stop.is_set():
            return len(messages)  # stopping: they come back after their visibility timeout
        event = {"Records": [lambda_sqs_record(m, self.queue_arn) for m in messages]}
        try:
            response = self.function.invoke(event)
        except Exception:
            log.exception("%s failed; the batch stays on the queue", self.function.name)
            return len(messages)
        failed = set()
        if self.report_failures and isinstance(response, dict):
            failed = {
                str(item.get("itemIdentifier")) for item in response.get("batchItemFailures") or []
            }
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        if failed:
            log.info("%s reported %d failed message(s)", self.function.name, len(failed))
        return len(messages)
