"""Staging: page through the client's dataset endpoint into S3, then start SageMaker training."""

import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from aifactory import aws, callbacks, cost, timefmt
from aifactory.egress import redact_url
from aifactory.errors import EgressError, StagingFailed, StagingStopped
from aifactory.log import logger
from aifactory.runtime import Runtime

# SageMaker tag values: letters, digits, spaces and _.:/=+-@, up to 256 characters.
_TAG_UNSAFE = re.compile(r"[^\w\s.:/=+\-@]", re.UNICODE)


# The StageQueue's redrive policy (maxReceiveCount) in template.yaml.
STAGE_MAX_RECEIVES = 3


def dataset_prefix(job_name: str) -> str:
    return f"datasets/{job_name}/"


@dataclass
class StagingStats:
    records: int = 0
    pages: int = 0
    bytes: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


class _IterStream(io.RawIOBase):
    """A read-only byte stream over an iterator of chunks, for the S3 transfer manager."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class DatasetReader:
    """Reads the dataset endpoint page by page, as JSON Lines, counting as it goes."""

    def __init__(self, rt: Runtime, job: dict[str, Any], headers: dict[str, str]) -> None:
        self.rt = rt
        self.job = job
        self.endpoint = job["request"]["dataset_endpoint"]
        self.headers = headers
        self.stats = StagingStats()

    def _fetch(self, offset: int, page_size: int) -> list[Any]:
        endpoint, pagination = self.endpoint, self.endpoint["pagination"]
        params = {pagination["offset_param"]: offset, pagination["page_size_param"]: page_size}
        url, kwargs = endpoint["url"], {}
        if endpoint["params_in"] == "query" or endpoint["method"] == "GET":
            joiner = "&" if "?" in url else "?"
            url = f"{url}{joiner}{urlencode(params)}"
        elif endpoint["params_in"] == "json":
            kwargs["json"] = params
        else:
            kwargs["data"] = params
        where = f"at offset {offset}"
        try:
            response = self.rt.http.request(
                endpoint["method"],
                url,
                headers=self.headers,
                max_bytes=self.rt.settings.dataset_page_max_bytes,
                **kwargs,
            )
        except EgressError as exc:
            raise StagingFailed(f"dataset endpoint {where}: {exc}") from None
        if 300 <= response.status < 400:
            raise StagingFailed(
                f"dataset endpoint {where} answered HTTP {response.status}; "
                "redirects are not followed"
            )
        if not 200 <= response.status < 300:
            raise StagingFailed(f"dataset endpoint {where} answered HTTP {response.status}")
        try:
            page = json.loads(response.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StagingFailed(f"dataset endpoint {where} returned malformed JSON") from None
        key = endpoint["records_key"]
        records = page.get(key) if isinstance(page, dict) else None
        if not isinstance(records, list):
            raise StagingFailed(f"dataset endpoint {where} returned no {key!r} list")
        return records

    def _stop_requested(self) -> bool:
        current = self.rt.store.get(self.job["job_name"]) or {}
        return bool(current.get("stop_requested"))

    def chunks(self) -> Iterator[bytes]:
        """JSON Lines, a page at a time. Raises StagingFailed / StagingStopped mid-stream."""
        pagination = self.endpoint["pagination"]
        size, begin = pagination["page_size"], pagination["begin_offset"]
        max_pages, cap = pagination["max_pages"], self.rt.settings.max_pages_cap
        index = 0
        while not (max_pages and index >= max_pages):
            if index >= cap:
                raise StagingFailed(
                    f"dataset has more than {cap} pages, the deployment's cap; "
                    "set dataset_endpoint.pagination.max_pages"
                )
            if self._stop_requested():
                raise StagingStopped()
            records = self._fetch(begin + index * size, size)
            index += 1
            if not records:
                break
            lines = b"".join(
                json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                for r in records
            )
            self.stats.pages += 1
            self.stats.records += len(records)
            self.stats.bytes += len(lines)
            self.stats.digest.update(lines)
            yield lines
            if len(records) < size:
                break
        if self.stats.records == 0:
            raise StagingFailed("dataset endpoint returned no records")


def _tag(value: str) -> str:
    return _TAG_UNSAFE.sub("_", value)[:256]


def training_job_params(rt: Runtime, job: dict[str, Any]) -> dict[str, Any]:
    settings, model = rt.settings, job["request"]["training_model"]
    bucket = settings.data_bucket
    params = {
        "TrainingJobName": job["job_name"],
        "AlgorithmSpecification": {"TrainingImage": model["image"], "TrainingInputMode": "File"},
        "RoleArn": settings.sagemaker_role_arn,
        "HyperParameters": model["hyperparameters"],
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{bucket}/{dataset_prefix(job['job_name'])}train/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "application/jsonlines",
            }
        ],
        "OutputDataConfig": {
            "S3OutputPath": f"s3://{bucket}/models/",
            "KmsKeyId": settings.kms_key_id,
        },
        "ResourceConfig": {
            "InstanceType": model["resource"]["InstanceType"],
            "InstanceCount": model["resource"]["InstanceCount"],
            "VolumeSizeInGB": model["resource"]["VolumeSizeInGB"],
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_seconds},
        "Tags": [
            {"Key": "aifactory:managed", "Value": "true"},
            {"Key": "aifactory:owner", "Value": _tag(job["owner"])},
            {"Key": "aifactory:task_def", "Value": _tag(job["task_def"])},
            {"Key": "aifactory:creator", "Value": _tag(job["creator"])},
        ],
    }
    # Spot and checkpoints, warm pool, input mode: see cost.py.
    return cost.merge(
        params, cost.training_job_fields(settings, job["job_name"], model["resource"])
    )


def _end(rt: Runtime, job_name: str, status: str, reason: str | None = None) -> None:
    """End a job before SageMaker ever saw it, and send its one callback."""
    if rt.store.finish(job_name, status, reason=reason, end_time=timefmt.to_iso(timefmt.now())):
        logger.info("job ended during staging", extra={"job_name": job_name, "status": status})
    callbacks.start_delivery(rt, job_name)


def stage_job(rt: Runtime, job_name: str, *, final_attempt: bool = True) -> None:
    """Stage one job. Expected failures end the job; unexpected ones are retried by SQS,
    and on the final attempt they too end the job, so none is left staging forever."""
    try:
        _stage(rt, job_name)
    except Exception:
        if not final_attempt:
            raise
        logger.exception("staging failed unexpectedly", extra={"job_name": job_name})
        job = rt.store.get(job_name)
        if job and not job.get("sagemaker_job"):  # once SageMaker has it, its events rule
            _end(rt, job_name, "Failed", "internal error while staging the dataset")


def _stage(rt: Runtime, job_name: str) -> None:
    job = rt.store.get(job_name)
    if job is None:
        logger.warning("staging message for an unknown job", extra={"job_name": job_name})
        return
    if job.get("sagemaker_job") or job["status"] in ("Completed", "Failed", "Stopped"):
        return  # a repeated message for a job that has moved on
    if job.get("stop_requested"):
        _end(rt, job_name, "Stopped")
        return
    if job.get("secondary_status") == "Staging":
        headers = rt.secrets.open(job_name, job["secrets"]).get("dataset_headers", {})
        reader = DatasetReader(rt, job, headers)
        try:
            rt.storage.upload_stream(
                f"{dataset_prefix(job_name)}train/data.jsonl",
                io.BufferedReader(_IterStream(reader.chunks()), buffer_size=1024 * 1024),
                "application/jsonlines",
            )
        except StagingStopped:
            _end(rt, job_name, "Stopped")
            return
        except StagingFailed as exc:
            _end(rt, job_name, "Failed", f"Staging failed: {exc}")
            return
        stats = reader.stats
        rt.storage.put_json(
            f"{dataset_prefix(job_name)}manifest.json",
            {
                "job_name": job_name,
                "source_url": redact_url(reader.endpoint["url"]),
                "method": reader.endpoint["method"],
                "records": stats.records,
                "pages": stats.pages,
                "bytes": stats.bytes,
                "sha256": stats.digest.hexdigest(),
                "objects": [f"{dataset_prefix(job_name)}train/data.jsonl"],
                "format": "application/jsonlines",
                "staged_at": timefmt.to_seed(timefmt.now()),
            },
        )
        logger.info(
            "dataset staged",
            extra={"job_name": job_name, "records": stats.records, "pages": stats.pages},
        )
        if rt.store.mark_starting(job_name) is None:
            _end(rt, job_name, "Stopped")  # a stop arrived after the last page
            return
    _start_training(rt, rt.store.get(job_name) or job)


def _start_training(rt: Runtime, job: dict[str, Any]) -> None:
    job_name = job["job_name"]
    try:
        rt.training.create(**training_job_params(rt, job))
    except ClientError as exc:
        code = aws.error_code(exc)
        if code == "ResourceInUse":
            pass  # created by an earlier delivery of this message
        elif code in ("ValidationException", "ResourceLimitExceeded", "AccessDeniedException"):
            message = aws.error_message(exc) or code
            _end(rt, job_name, "Failed", f"SageMaker refused the training job: {message}")
            return
        else:
            raise
    updated = rt.store.mark_sagemaker_created(job_name)
    logger.info("training job created", extra={"job_name": job_name})
    if updated and updated.get("stop_requested"):
        # The stop came while CreateTrainingJob was in flight; pass it on.
        try:
            rt.training.stop(job_name)
        except ClientError as exc:
            logger.warning(
                "could not pass on a stop",
                extra={"job_name": job_name, "code": aws.error_code(exc)},
            )
