"""What the Factory answers, as pydantic models.

These are the response shapes of `openapi.yaml` (which is generated from them and from the
Factory's request models). Every model allows fields it does not know, so a client keeps
working when the Factory adds one.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["InProgress", "Completed", "Failed", "Stopping", "Stopped"]
TERMINAL: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})

# The seed's time format: UTC, "YYYY-MM-DD HH:MM:SS".
SeedTime = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
        examples=["2026-11-27 07:30:00"],
        description="UTC, YYYY-MM-DD HH:MM:SS",
    ),
]
# Metrics as the seed writes them: strings with two decimals; supports integer strings.
Metric = Annotated[str, Field(pattern=r"^\d+\.\d{2}$", examples=["0.57"])]
Support = Annotated[str, Field(pattern=r"^\d+$", examples=["5183"])]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ReportAverage(_Open):
    """The weighted average over the classes."""

    precision: Metric
    recall: Metric
    f1_score: Metric = Field(alias="f1-score")
    support: Support


class ReportRow(ReportAverage):
    """One class of the evaluation report; `no` is the class (a tag or a topic)."""

    no: str


class Report(_Open):
    """The evaluation report, the callback's `log`."""

    avg: ReportAverage
    details: list[ReportRow]


class CreateResponse(_Open):
    status: Literal["success"]
    job_name: str = Field(examples=["sage-maker-train-20261127-073000-a1b2c3"])


class JobSummary(_Open):
    """One job of the list; `TrainingEndTime` appears once the job has ended."""

    TrainingJobStatus: Status
    TrainingJobName: str
    CreationTime: SeedTime
    TrainingEndTime: SeedTime | None = None


class CallbackState(_Open):
    """How the job's callback stands."""

    state: Literal["pending", "delivering", "retrying", "delivered", "failed"]
    attempts: int
    last_attempt_at: SeedTime | None = None
    next_attempt_at: SeedTime | None = None
    last_error: str | None = None


class Progress(_Open):
    """How far a training job has come, from the step its image last reported."""

    step: int = Field(description="the latest train:step the image reported")
    total_steps: int | None = Field(
        default=None, description="the job's process.train.steps; null if it gave none"
    )
    percent: float | None = Field(
        default=None, ge=0, le=100, description="step / total_steps, 0 to 100"
    )


class JobStatus(_Open):
    """One job's state. `status` is the seed's field; the others are additive."""

    status: Status
    job_name: str | None = None
    secondary_status: str | None = None
    failure_reason: str | None = None
    creation_time: SeedTime | None = None
    training_end_time: SeedTime | None = None
    callback: CallbackState | None = None
    staged_records: int | None = Field(default=None, description="while staging")
    staged_pages: int | None = Field(default=None, description="while staging")
    queued_at: SeedTime | None = Field(
        default=None, description="when the job began to wait for training capacity"
    )
    training_start_time: SeedTime | None = Field(
        default=None, description="once training has started; kept once it has ended"
    )
    report: Report | None = Field(
        default=None,
        description="once the job has ended and its callback was built; null without one",
    )
    progress: Progress | None = Field(
        default=None,
        description="while training; null until the image reports a step (train:step)",
    )

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


class StopResponse(_Open):
    status: Literal["success"]
    job_name: str


class RedeliverResponse(_Open):
    status: Literal["accepted"]
    job_name: str


class ModelUrlResponse(_Open):
    status: Literal["success"]
    job_name: str
    model: str = Field(description="a presigned HTTPS link to model.tar.gz")
    expires_at: SeedTime


class LogEvent(_Open):
    """One line of the training log."""

    timestamp: SeedTime
    message: str


class TrainingLogsResponse(_Open):
    """A page of the training log, oldest line first."""

    status: Literal["success"]
    job_name: str
    events: list[LogEvent]
    next_token: str | None = Field(
        description="pass as next_token to read on; non-null while more lines are stored or "
        "the job is still running, null once it has ended and every line was returned"
    )


class MetricPoint(_Open):
    """A metric's value over one period (its average)."""

    timestamp: SeedTime
    value: float


class TrainingMetricsResponse(_Open):
    """The job's training metrics, parsed from its log; each series oldest point first."""

    status: Literal["success"]
    job_name: str
    metrics: dict[str, list[MetricPoint]] = Field(
        description="train:loss, train:step and train:learning_rate (empty before any)"
    )


class ErrorResponse(_Open):
    """Every error the Factory itself answers; the message names the field."""

    status: Literal["error"]
    message: str


class GatewayError(_Open):
    """What API Gateway answers for a missing or unknown key: {"message": "Forbidden"}."""

    message: str


class Callback(_Open):
    """The body POSTed to `callback_url.url` when a job ends."""

    status: Literal["Completed", "Failed", "Stopped"]
    TrainingEndTime: SeedTime
    CreationTime: SeedTime
    job_name: str
    model: str | None = Field(description="presigned link to model.tar.gz, or null")
    task_def: str
    creator: str
    log: Report | None
    model_s3_uri: str | None = None
    failure_reason: str | None = None
