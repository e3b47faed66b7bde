"""Which SageMaker training job is a job's, and which job is a training job's."""

import re
from typing import Any

# A training job that Batch starts is named by Batch: "AWSBatch", then the request's name,
# then a hash. Its tags are the request's, so `aifactory:job` names the Factory's job.
BATCH_TRAINING_PREFIX = "AWSBatch"
JOB_TAG = "aifactory:job"
_OUR_NAME = re.compile(r"sage-maker-train-\d{8}-\d{6}-[0-9a-f]{6}")


def training_name(job: dict[str, Any]) -> str:
    """The SageMaker training job's name: Batch chooses its own, directly it is the job's."""
    return str(job.get("training_job_name") or job["job_name"])


def job_name_of_training(detail: dict[str, Any]) -> str | None:
    """The Factory's job behind a SageMaker training job, however it was started."""
    tags = detail.get("Tags")
    if isinstance(tags, dict) and isinstance(tags.get(JOB_TAG), str):
        return str(tags[JOB_TAG])
    name = detail.get("TrainingJobName")
    if not isinstance(name, str):
        return None
    if name.startswith(BATCH_TRAINING_PREFIX):
        found = _OUR_NAME.match(name, len(BATCH_TRAINING_PREFIX))
        return found.group(0) if found else None
    return name
