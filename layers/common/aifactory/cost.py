"""Cost: managed spot with checkpoints, warm pools and the input mode, and what a job cost.

`training_job_fields` is what a job adds to CreateTrainingJob under the deployment's policy:

- spot (`SpotTraining`: never, opt-in or always; under opt-in the request's
  `training_model.resource.spot` decides): EnableManagedSpotTraining, a
  StoppingCondition.MaxWaitTimeInSeconds of at least MaxRuntimeInSeconds, and a
  CheckpointConfig that syncs /opt/ml/checkpoints with s3://<bucket>/checkpoints/<job>/, so
  an interrupted job resumes where it left off;
- a warm pool (`WarmPoolSeconds` > 0) for jobs that are not spot: SageMaker does not keep
  spot instances warm, so the two are never combined;
- the input mode (`InputMode`: File, or FastFile which streams from S3 instead of copying the
  whole dataset before training starts).

`cost_fields` turns a DescribeTrainingJob answer into the callback's and status's additive
fields: training_seconds, billable_seconds, spot, and spot_savings (a percentage, as
SageMaker computes it: (1 - billable / training) * 100) when spot ran.
"""

from typing import Any

from aifactory.settings import Settings

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# Secondary statuses that end a job without a FailureReason; the callback says why.
_ENDED_BY_LIMIT = {
    "MaxWaitTimeExceeded": "MaxWaitTimeExceeded: the spot job waited for capacity or was "
    "interrupted past MaxWaitTimeInSeconds",
    "MaxRuntimeExceeded": "MaxRuntimeExceeded: the job ran past MaxRuntimeInSeconds",
}


def checkpoint_prefix(job_name: str) -> str:
    return f"checkpoints/{job_name}/"


def uses_spot(settings: Settings, resource: dict[str, Any]) -> bool:
    """The operator's policy decides; under opt-in, the request's resource.spot does."""
    if settings.spot_training == "always":
        return True
    if settings.spot_training == "never":
        return False
    return bool(resource.get("spot"))


def max_wait_seconds(settings: Settings) -> int:
    """SageMaker refuses a MaxWaitTimeInSeconds below MaxRuntimeInSeconds."""
    return max(settings.max_wait_seconds, settings.max_runtime_seconds)


def training_job_fields(
    settings: Settings, job_name: str, resource: dict[str, Any]
) -> dict[str, Any]:
    """The CreateTrainingJob fields this module decides, nested as in the request."""
    fields: dict[str, Any] = {
        "AlgorithmSpecification": {"TrainingInputMode": settings.input_mode},
    }
    if uses_spot(settings, resource):
        fields["EnableManagedSpotTraining"] = True
        fields["StoppingCondition"] = {"MaxWaitTimeInSeconds": max_wait_seconds(settings)}
        fields["CheckpointConfig"] = {
            "S3Uri": f"s3://{settings.data_bucket}/{checkpoint_prefix(job_name)}",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
    elif settings.warm_pool_seconds > 0:
        fields["ResourceConfig"] = {"KeepAlivePeriodInSeconds": settings.warm_pool_seconds}
    return fields


def merge(params: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`params` with `extra` merged in, nested dicts merged key by key."""
    merged = dict(params)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _seconds(value: Any) -> int | None:
    return None if value is None else int(value)


def cost_fields(described: dict[str, Any] | None) -> dict[str, Any]:
    """training_seconds, billable_seconds, spot and spot_savings from DescribeTrainingJob.

    A job that never reached SageMaker (ended while staging) trained and cost nothing.
    """
    if described is None:
        return {"training_seconds": 0, "billable_seconds": 0, "spot": False, "spot_savings": None}
    training = _seconds(described.get("TrainingTimeInSeconds"))
    billable = _seconds(described.get("BillableTimeInSeconds"))
    spot = bool(described.get("EnableManagedSpotTraining"))
    savings = None
    if spot and training and billable is not None:
        savings = round(max(0.0, (1 - billable / training) * 100), 1)
    return {
        "training_seconds": training,
        "billable_seconds": billable,
        "spot": spot,
        "spot_savings": savings,
    }


def limit_reason(described: dict[str, Any]) -> str | None:
    """Why a job that hit MaxWaitTimeInSeconds or MaxRuntimeInSeconds ended, as SageMaker
    reports it (its own status message when there is one)."""
    secondary = described.get("SecondaryStatus")
    if secondary not in _ENDED_BY_LIMIT:
        return None
    for transition in reversed(described.get("SecondaryStatusTransitions") or []):
        if transition.get("Status") == secondary and transition.get("StatusMessage"):
            return f"{secondary}: {transition['StatusMessage']}"
    return _ENDED_BY_LIMIT[secondary]


COST_ATTRIBUTES = ("training_seconds", "billable_seconds", "spot", "spot_savings")


def status_fields(job: dict[str, Any]) -> dict[str, Any]:
    """What check_training_status shows of an ended job's cost (null until it is known)."""
    return {name: job.get(name) for name in COST_ATTRIBUTES}
