"""Small adapters over KMS, S3, SQS and SageMaker: the only places that speak to AWS."""

import json
from typing import IO, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from aifactory import aws

# The transfer manager streams a non-seekable source in parts of this size, holding at most
# max_concurrency parts in memory, so staging memory does not grow with the dataset.
STAGING_TRANSFER = TransferConfig(
    multipart_threshold=8 * 1024 * 1024,
    multipart_chunksize=8 * 1024 * 1024,
    max_concurrency=2,
    use_threads=True,
)


class SecretBox:
    """Client secrets (request headers), encrypted under the stack's KMS key, bound to the job."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id

    def seal(self, job_name: str, secrets: dict[str, Any]) -> bytes:
        response = aws.client("kms").encrypt(
            KeyId=self.key_id,
            Plaintext=json.dumps(secrets).encode(),
            EncryptionContext={"job_name": job_name},
        )
        return bytes(response["CiphertextBlob"])

    def open(self, job_name: str, blob: bytes) -> dict[str, Any]:
        response = aws.client("kms").decrypt(
            CiphertextBlob=blob, EncryptionContext={"job_name": job_name}
        )
        return dict(json.loads(response["Plaintext"]))


class Storage:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def upload_stream(self, key: str, stream: IO[bytes], content_type: str) -> None:
        """Multipart upload from a stream; s3transfer aborts the upload if the stream fails."""
        aws.client("s3").upload_fileobj(
            stream,
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Config=STAGING_TRANSFER,
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


class Queues:
    def send(self, queue_url: str, body: dict[str, Any], delay_seconds: int = 0) -> None:
        aws.client("sqs").send_message(
            QueueUrl=queue_url, MessageBody=json.dumps(body), DelaySeconds=delay_seconds
        )

    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        aws.client("sqs").change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )
