"""Small adapters over KMS, S3, SQS and SageMaker: the only places that speak to AWS."""

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any, BinaryIO

from botocore.exceptions import ClientError
from s3transfer.manager import TransferConfig, TransferManager

from aifactory import aws

# A staged shard is sent in parts of this size (one put when it is smaller), at most this many
# at a time, while the next pages are fetched: staging holds a bounded number of parts in
# memory (those in flight and the one being read) however large the shard or the dataset is.
SHARD_PART_BYTES = 8 * 1024 * 1024
SHARD_PARTS_IN_FLIGHT = 2
_TRANSFER = TransferConfig(
    multipart_threshold=SHARD_PART_BYTES,
    multipart_chunksize=SHARD_PART_BYTES,
    max_request_concurrency=SHARD_PARTS_IN_FLIGHT,
    max_in_memory_upload_chunks=SHARD_PARTS_IN_FLIGHT,
    max_submission_concurrency=1,
)
# Bytes a writer may be ahead of the upload before write() waits (Linux lets a pipe hold up
# to 1 MiB unprivileged; elsewhere the system's default is kept).
_PIPE_BYTES = 1024 * 1024
# S3 answers a conditional write whose key exists with 412, or 409 when another write of the
# same key is in progress.
_KEY_EXISTS = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class ShardExists(Exception):
    """The shard's key already holds an object; nothing was overwritten."""


class ShardUpload:
    """One shard, written once: uploaded while it is written, created only if its key is free.

    Call write() with the shard's bytes in order, then complete(). The bytes go through a pipe
    to s3transfer (boto3's transfer manager), which reads them in parts and uploads them,
    SHARD_PARTS_IN_FLIGHT at a time, while the caller goes on; write() waits only when the
    upload is that far behind. complete() raises ShardExists, and overwrites nothing, when the
    key already holds an object. abort() (safe at any time, also after a failure) discards the
    parts of an unfinished multipart upload.
    """

    def __init__(self, bucket: str, key: str, content_type: str) -> None:
        self.bucket = bucket
        self.key = key
        readable, writable = os.pipe()
        with contextlib.suppress(AttributeError, OSError):  # Linux only; a bigger window
            fcntl.fcntl(writable, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined]
        self._source = os.fdopen(readable, "rb")
        self._sink: BinaryIO | None = os.fdopen(writable, "wb")
        self._manager = TransferManager(aws.create_only_s3(), _TRANSFER)
        self._future = self._manager.upload(
            self._source, bucket, key, extra_args={"ContentType": content_type}
        )

    def write(self, data: bytes) -> None:
        if self._sink is None:
            raise ValueError(f"shard {self.key} is no longer open")
        if self._future.done():  # the upload failed: say why now, not at complete()
            self._finish()
        self._sink.write(data)

    def _finish(self) -> None:
        """End the stream and wait for the upload's outcome (raised if it failed)."""
        sink, self._sink = self._sink, None
        try:
            if sink is not None:
                sink.close()
            self._future.result()
        finally:
            self._manager.shutdown()
            self._source.close()

    def complete(self) -> None:
        try:
            self._finish()
        except ClientError as exc:
            if aws.error_code(exc) in _KEY_EXISTS:
                raise ShardExists(self.key) from None
            raise

    def abort(self) -> None:
        """Cancel the upload; s3transfer aborts the multipart upload it started."""
        if self._sink is None and self._future.done():
            return
        self._future.cancel()
        # The upload's own error, if it had one, is not the abort's: the caller is already
        # handling a failure of its own.
        with contextlib.suppress(Exception):
            self._finish()


# KMS Encrypt takes at most 4096 bytes of plaintext.
KMS_MAX_PLAINTEXT = 4096


class SecretBox:
    """Client secrets (request headers), encrypted under the stack's KMS key, bound to the job.

    The secrets are one blob when they fit KMS's 4096 bytes; otherwise one blob per entry
    (the callback's headers, the dataset's headers and the signing secret, each bounded
    well under it at validation), kept as a list. open() reads either form.
    """

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id

    def _encrypt(self, job_name: str, plaintext: bytes) -> bytes:
        response = aws.client("kms").encrypt(
            KeyId=self.key_id, Plaintext=plaintext, EncryptionContext={"job_name": job_name}
        )
        return bytes(response["CiphertextBlob"])

    def seal(self, job_name: str, secrets: dict[str, Any]) -> bytes | list[bytes]:
        plaintext = json.dumps(secrets).encode()
        if len(plaintext) <= KMS_MAX_PLAINTEXT:
            return self._encrypt(job_name, plaintext)
        return [
            self._encrypt(job_name, json.dumps({name: value}).encode())
            for name, value in secrets.items()
        ]

    def open(self, job_name: str, blob: bytes | list[bytes]) -> dict[str, Any]:
        opened: dict[str, Any] = {}
        for part in blob if isinstance(blob, list) else [blob]:
            response = aws.client("kms").decrypt(
                CiphertextBlob=part, EncryptionContext={"job_name": job_name}
            )
            opened.update(json.loads(response["Plaintext"]))
        return opened


class Storage:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def start_shard(self, key: str, content_type: str) -> ShardUpload:
        return ShardUpload(self.bucket, key, content_type)

    def sha256(self, key: str) -> str | None:
        """The SHA-256 of the object's bytes, read as a stream; None if it does not exist."""
        body = self.open(key)
        if body is None:
            return None
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects (a missing one is no error)."""
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            aws.client("s3").delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
            )

    def put_json(self, key: str, document: Any) -> None:
        aws.client("s3").put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(document, indent=2).encode(),
            ContentType="application/json",
        )

    def open(self, key: str) -> Any | None:
        """A streaming body for the object, or None if it does not exist."""
        try:
            return aws.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if aws.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def exists(self, key: str) -> bool:
        try:
            aws.client("s3").head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if aws.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise

    def presign(self, key: str, expires: int) -> str:
        return str(
            aws.client("s3").generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
            )
        )


class Training:
    """SageMaker training jobs."""

    def create(self, **params: Any) -> None:
        aws.client("sagemaker").create_training_job(**params)

    def describe(self, job_name: str) -> dict[str, Any]:
        return dict(aws.client("sagemaker").describe_training_job(TrainingJobName=job_name))

    def stop(self, job_name: str) -> None:
        aws.client("sagemaker").stop_training_job(TrainingJobName=job_name)

    def find(self, arn: str) -> str | None:
        """The name of the training job with this ARN (an ARN has the name in lower case)."""
        wanted = arn.rsplit("/", 1)[-1]
        answer = aws.client("sagemaker").list_training_jobs(NameContains=wanted, MaxResults=100)
        for summary in answer.get("TrainingJobSummaries", []):
            if str(summary.get("TrainingJobArn", "")).lower() == arn.lower():
                return str(summary["TrainingJobName"])
        return None


class Queues:
    def send(self, queue_url: str, body: dict[str, Any], delay_seconds: int = 0) -> None:
        aws.client("sqs").send_message(
            QueueUrl=queue_url, MessageBody=json.dumps(body), DelaySeconds=delay_seconds
        )

    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        aws.client("sqs").change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )


class Batch:
    """AWS Batch service jobs: SageMaker training jobs that wait in the job queue for capacity."""

    def __init__(self, job_queue: str) -> None:
        self.job_queue = job_queue

    def submit(
        self,
        *,
        name: str,
        payload: dict[str, Any],
        share: str,
        priority: int,
        token: str,
    ) -> str:
        """Queue a CreateTrainingJob request; the service job's id."""
        answer = aws.client("batch").submit_service_job(
            jobName=name,
            jobQueue=self.job_queue,
            serviceJobType="SAGEMAKER_TRAINING",
            serviceRequestPayload=json.dumps(payload),
            shareIdentifier=share,
            schedulingPriority=priority,
            clientToken=token,
        )
        return str(answer["jobId"])

    def find(self, name: str) -> str | None:
        """The id of the newest service job of this name in the queue, or None."""
        answer = aws.client("batch").list_service_jobs(
            jobQueue=self.job_queue, filters=[{"name": "JOB_NAME", "values": [name]}]
        )
        jobs = [j for j in answer.get("jobSummaryList", []) if j.get("jobName") == name]
        return str(jobs[0]["jobId"]) if jobs else None

    def describe(self, job_id: str) -> dict[str, Any]:
        return dict(aws.client("batch").describe_service_job(jobId=job_id))

    def terminate(self, job_id: str, reason: str) -> None:
        aws.client("batch").terminate_service_job(jobId=job_id, reason=reason)
