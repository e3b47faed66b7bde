"""The MetricDefinitions a job gives SageMaker, run over a real trainer's output as SageMaker
runs them: every line, each expression's first group a metric value."""

from __future__ import annotations

import json
import re

import botocore.session
from botocore.validate import validate_parameters

from aifactory import scheduling
from aifactory.models import CreateTrainingJobRequest, validate
from tests.support import load_event
from tests.trainers.trainer_helpers import Run
from tests.unit.fakes import fake_runtime

SEED = json.loads(load_event("create_training_job.json")["body"])
DEFINITIONS_SHAPE = (
    botocore.session.get_session()
    .get_service_model("sagemaker")
    .operation_model("CreateTrainingJob")
    .input_shape.members["AlgorithmSpecification"]
    .members["MetricDefinitions"]
)


def job_definitions() -> list[dict[str, str]]:
    """What the stager sends SageMaker for the seed's request."""
    rt = fake_runtime()
    request = validate(CreateTrainingJobRequest, SEED, rt.settings)
    job = {
        "job_name": "sage-maker-train-20260101-000000-abcdef",
        "owner": "key-1",
        "task_def": request.task_def,
        "creator": request.creator,
        "request": request.model_dump(mode="json"),
    }
    params = scheduling.training_job_params(rt, job)
    return list(params["AlgorithmSpecification"]["MetricDefinitions"])


def as_sagemaker_reads(stdout: str, definitions: list[dict[str, str]]) -> dict[str, list[float]]:
    """Each metric's values, in log order: the first group of each line's match."""
    values: dict[str, list[float]] = {d["Name"]: [] for d in definitions}
    for line in stdout.splitlines():
        for definition in definitions:
            match = re.search(definition["Regex"], line)
            if match:
                values[definition["Name"]].append(float(match.group(1)))
    return values


def test_the_job_asks_sagemaker_for_progress_metrics_in_a_form_it_accepts() -> None:
    definitions = job_definitions()
    validate_parameters(definitions, DEFINITIONS_SHAPE)  # raises on what SageMaker refuses
    names = [d["Name"] for d in definitions]
    assert {"train:step", "train:loss", "train:learning_rate"} <= set(names)
    assert len(names) == len(set(names))


def test_the_definitions_read_step_loss_and_learning_rate_from_a_real_run(seed_run: Run) -> None:
    # Given a reference image trained with the seed's settings (400 steps, a line every 50)
    printed = re.findall(
        r"^step (\d+)/400 loss=([0-9.]+) lr=([0-9.]+)", seed_run.stdout, re.MULTILINE
    )
    assert len(printed) == 8
    # When SageMaker applies the job's MetricDefinitions to each line of its output
    values = as_sagemaker_reads(seed_run.stdout, job_definitions())
    # Then it gets every step, loss and learning rate the trainer printed, and nothing else
    assert values["train:step"] == [float(step) for step, _, _ in printed]
    assert values["train:step"] == [50.0 * n for n in range(1, 9)]
    assert values["train:loss"] == [float(loss) for _, loss, _ in printed]
    assert values["train:learning_rate"] == [float(lr) for _, _, lr in printed]
    # the loss falls and the learning rate decays, as the image trains
    assert values["train:loss"][-1] < values["train:loss"][0] / 4
    assert values["train:learning_rate"] == sorted(values["train:learning_rate"], reverse=True)


def test_a_resume_line_is_no_progress() -> None:
    definitions = job_definitions()
    resumed = "resuming from checkpoint at step 200/400\nstep 250/400 loss=0.5 lr=0.1 grad_norm=1"
    values = as_sagemaker_reads(resumed, definitions)
    assert values["train:step"] == [250.0]
    assert values["train:loss"] == [0.5] and values["train:learning_rate"] == [0.1]
