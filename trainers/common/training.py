"""The training run both images share: read, split, train, evaluate, write.

An image supplies a `Task` (how to parse a record and build its model); this module does the
rest of the SageMaker contract:

1. hyperparameters from input/config/hyperparameters.json (see `hyperparameters`);
2. records from every file of the `train` channel; a `validation` channel, when there is one,
   is the evaluation set, otherwise a deterministic ~eval.fraction of the records is held out;
3. `steps` steps of momentum SGD over shuffled batches of `batchsize` records, the learning
   rate decaying as initLearningRate * decayRate ** (step / decayLearningSteps);
4. the held-out records scored into output/data/evaluation.json, with the majority-class
   baseline printed beside it and kept in model/metadata.json;
5. the model's weights and vocabularies in model/.

A TrainingError (bad data, bad hyperparameter) ends the run with its message in
output/failure and exit status 1; any other exception is an internal error (status 2).
SIGTERM, which SageMaker sends to stop a job, ends the run at once with status 143.
"""

from __future__ import annotations

import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.checkpoints import Checkpoints, TrainingState, fingerprint
from common.data import holdout_split, list_data_files, read_records
from common.hyperparameters import Hyperparameters, parse_hyperparameters
from common.metrics import classification_report, majority_baseline, natural_key
from common.nn import MomentumSGD, Params
from common.sagemaker import (
    SageMakerPaths,
    TrainingError,
    read_json_config,
    write_failure,
    write_json,
)

METADATA_FILE = "metadata.json"
EXIT_OK, EXIT_TRAINING_ERROR, EXIT_INTERNAL_ERROR = 0, 1, 2


class Model(Protocol):
    """What the loop needs from an image's model. `prepared` is the model's own encoding of a
    list of examples (made once by `prepare`); `indices` pick examples from it."""

    params: Params
    labels: list[str]

    def prepare(self, examples: Sequence[Any]) -> Any: ...

    def loss_and_grads(
        self, prepared: Any, indices: np.ndarray, rng: np.random.Generator, dropout: float
    ) -> tuple[float, Params]: ...

    def predict(self, prepared: Any, indices: np.ndarray) -> np.ndarray: ...

    def save(self, model_dir: Path) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class Task(Protocol):
    name: str  # the image, e.g. "slot_tagger"
    task_def: str  # the Factory's task_def, e.g. "ml_tagger"
    unit: str  # what is scored, e.g. "token" or "text"

    def parse_record(self, record: dict[str, Any]) -> Any: ...

    def split_key(self, example: Any) -> str: ...

    def labels_of(self, example: Any) -> Sequence[str]: ...

    def build_model(
        self,
        examples: Sequence[Any],
        labels: list[str],
        hp: Hyperparameters,
        rng: np.random.Generator,
    ) -> Model: ...


def log(message: str) -> None:
    print(message, flush=True)


@dataclass
class Dataset:
    train: list[Any]
    evaluation: list[Any]
    files: int
    source: str  # how the evaluation set was chosen


def load_hyperparameters(paths: SageMakerPaths) -> Hyperparameters:
    raw = read_json_config(paths.hyperparameters_file, default={})
    parsed = parse_hyperparameters(raw)
    if parsed.ignored:
        log(f"accepted with no effect in this image: {', '.join(parsed.ignored)}")
    if parsed.unknown:
        log(f"unknown hyperparameters, ignored: {', '.join(parsed.unknown)}")
    return parsed.values


def check_channels(paths: SageMakerPaths) -> dict[str, Any]:
    config = read_json_config(paths.input_data_config_file, default={})
    if config and "train" not in config:
        raise TrainingError(
            f"the job has no 'train' channel (channels: {', '.join(sorted(config)) or 'none'})"
        )
    for name, channel in config.items():
        if isinstance(channel, dict) and channel.get("TrainingInputMode") == "Pipe":
            raise TrainingError(
                f"channel {name!r} uses Pipe input mode; this image reads File mode only"
            )
    return config


def load_dataset(task: Task, paths: SageMakerPaths, hp: Hyperparameters) -> Dataset:
    channels = check_channels(paths)
    train_dir = paths.channel_dir("train")
    files = len(list_data_files(train_dir))
    records = read_records(train_dir, task.parse_record)
    if not records:
        raise TrainingError(
            f"no training records: the train channel holds {files} file(s) and no JSON lines"
        )
    distinct = Counter(label for r in records for label in task.labels_of(r))
    if len(distinct) < 2:
        only = f" ({next(iter(distinct))!r})" if distinct else ""
        raise TrainingError(
            f"the training data has {len(distinct)} class{only}; at least 2 are needed"
        )

    validation_dir = paths.channel_dir("validation")
    if "validation" in channels or validation_dir.is_dir():
        evaluation = read_records(validation_dir, task.parse_record)
        if evaluation:
            return Dataset(records, evaluation, files, "validation channel")

    train_idx, eval_idx = holdout_split([task.split_key(r) for r in records], hp.eval_fraction)
    return Dataset(
        [records[i] for i in train_idx],
        [records[i] for i in eval_idx],
        files,
        f"{len(eval_idx)} of {len(records)} records held out of the train channel",
    )


def training_labels(task: Task, dataset: Dataset, hp: Hyperparameters) -> list[str]:
    labels = sorted({lab for r in dataset.train for lab in task.labels_of(r)}, key=natural_key)
    if len(labels) < 2:
        raise TrainingError(
            f"after holding out the evaluation records, the training records have only "
            f"{len(labels)} class; add more data or lower eval.fraction"
        )
    if hp.num_classes != -1:
        if len(labels) > hp.num_classes:
            raise TrainingError(
                f"the training data has {len(labels)} classes but numClasses is "
                f"{hp.num_classes}; set numClasses to -1 to take the number from the data"
            )
        if len(labels) < hp.num_classes:
            log(f"numClasses is {hp.num_classes} but the data has {len(labels)}; using those")
    return labels


def gold_ids(task: Task, examples: Sequence[Any], index: dict[str, int]) -> np.ndarray:
    """Flat gold class ids; labels never seen in training get ids past the model's labels."""
    ids = [index.setdefault(lab, len(index)) for ex in examples for lab in task.labels_of(ex)]
    return np.asarray(ids, dtype=np.int64)


def train_model(
    model: Model,
    prepared: Any,
    n_examples: int,
    hp: Hyperparameters,
    rng: np.random.Generator,
    checkpoints: Checkpoints | None = None,
) -> float:
    """Run the optimisation; returns the mean loss over the last logging window.

    With `checkpoints` (a spot job), it resumes from the newest one and saves one every
    saveCheckpointSteps steps.
    """
    optimizer = MomentumSGD(model.params, hp.momentum)
    batch = min(hp.batch_size, n_examples)
    order = rng.permutation(n_examples)
    position = 0
    window_loss, window_steps, last = 0.0, 0, float("nan")
    first = 1
    resumed = checkpoints.latest(log) if checkpoints is not None else None
    if resumed is not None:
        for key, value in resumed.params.items():
            model.params[key][...] = value  # in place: the model's views share these arrays
        for key, value in resumed.velocity.items():
            optimizer.velocity[key][...] = value
        rng.bit_generator.state = resumed.rng_state
        order, position = resumed.order, resumed.position
        window_loss, window_steps, last = (
            resumed.window_loss,
            resumed.window_steps,
            resumed.last_loss,
        )
        first = resumed.step + 1
        log(f"resuming from checkpoint at step {resumed.step}/{hp.steps}")
    for step in range(first, hp.steps + 1):
        if position + batch > n_examples:  # next epoch: reshuffle
            order = rng.permutation(n_examples)
            position = 0
        indices = order[position : position + batch]
        position += batch
        lr = hp.learning_rate(step - 1)
        loss, grads = model.loss_and_grads(prepared, indices, rng, hp.dropout_rate)
        if not np.isfinite(loss):
            raise TrainingError(
                f"training diverged (the loss is {loss} at step {step}); "
                "lower initLearningRate or momentum"
            )
        grad_norm = optimizer.step(grads, lr)
        window_loss += loss
        window_steps += 1
        if step % hp.log_steps == 0 or step == hp.steps:
            mean = window_loss / window_steps
            log(f"step {step}/{hp.steps} loss={mean:.4f} lr={lr:.5f} grad_norm={grad_norm:.3f}")
            last, window_loss, window_steps = mean, 0.0, 0
        if checkpoints is not None and checkpoints.due(step, hp.steps):
            saved = checkpoints.save(
                TrainingState(
                    step=step,
                    params=model.params,
                    velocity=optimizer.velocity,
                    rng_state=rng.bit_generator.state,
                    order=order,
                    position=position,
                    window_loss=window_loss,
                    window_steps=window_steps,
                    last_loss=last,
                )
            )
            log(f"checkpoint saved at step {step}: {saved.name}")
    return last


def run(task: Task, paths: SageMakerPaths) -> dict[str, Any]:
    started = time.monotonic()
    log(f"{task.name}: training for task {task.task_def}; SageMaker root {paths.root}")
    hp = load_hyperparameters(paths)
    resources = read_json_config(paths.resource_config_file, default={})
    if resources:
        log(f"host {resources.get('current_host')} of {resources.get('hosts')}")

    dataset = load_dataset(task, paths, hp)
    labels = training_labels(task, dataset, hp)
    log(
        f"data: {len(dataset.train)} training and {len(dataset.evaluation)} evaluation "
        f"records from {dataset.files} file(s) ({dataset.source}); {len(labels)} classes"
    )

    rng = np.random.default_rng(hp.seed)
    model = task.build_model(dataset.train, labels, hp, rng)
    log(f"model: {model.describe()}")
    train_prepared = model.prepare(dataset.train)
    checkpoints = Checkpoints(
        paths.checkpoint_dir,
        hp.save_checkpoint_steps,
        hp.keep_checkpoint_max,
        fingerprint(hp.as_dict(), labels, model.params),
    )
    if checkpoints.enabled:
        log(
            f"checkpoints: every {hp.save_checkpoint_steps} steps to {paths.checkpoint_dir}, "
            f"keeping {hp.keep_checkpoint_max}"
        )
    final_loss = train_model(model, train_prepared, len(dataset.train), hp, rng, checkpoints)

    # Score the evaluation set in chunks of eval.batchsize records.
    eval_prepared = model.prepare(dataset.evaluation)
    n_eval = len(dataset.evaluation)
    predicted = np.concatenate(
        [
            model.predict(eval_prepared, np.arange(start, min(start + hp.eval_batch_size, n_eval)))
            for start in range(0, n_eval, hp.eval_batch_size)
        ]
    )
    index = {label: i for i, label in enumerate(labels)}
    train_gold = gold_ids(task, dataset.train, index)
    eval_gold = gold_ids(task, dataset.evaluation, index)
    all_labels = sorted(index, key=index.__getitem__)
    report = classification_report(eval_gold, predicted, all_labels)
    baseline = majority_baseline(train_gold, eval_gold, all_labels)

    write_json(paths.evaluation_file, report)
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    model.save(paths.model_dir)
    write_json(
        paths.model_dir / METADATA_FILE,
        {
            "image": task.name,
            "task_def": task.task_def,
            "labels": labels,
            "hyperparameters": hp.as_dict(),
            "model": model.describe(),
            "data": {
                "train_records": len(dataset.train),
                "evaluation_records": len(dataset.evaluation),
                "evaluation_source": dataset.source,
                "files": dataset.files,
            },
            "evaluation": {
                "unit": task.unit,
                "weighted_f1": report["avg"]["f1-score"],
                "majority_baseline_weighted_f1": baseline["avg"]["f1-score"],
                "final_training_loss": round(final_loss, 4),
            },
        },
    )
    avg = report["avg"]
    log(
        f"evaluation over {avg['support']} {task.unit}s: precision={avg['precision']:.4f} "
        f"recall={avg['recall']:.4f} f1={avg['f1-score']:.4f} "
        f"(majority-class baseline f1={baseline['avg']['f1-score']:.4f})"
    )
    elapsed = time.monotonic() - started
    log(f"wrote {paths.evaluation_file} and {paths.model_dir}/ in {elapsed:.1f}s")
    return report


def _stop_on_sigterm(signum: int, _frame: Any) -> None:
    # As PID 1 in a container, Python gets no default SIGTERM action, so handle it: stop at
    # once and save nothing (the job is being stopped).
    log("SIGTERM received: stopping without saving a model")
    raise SystemExit(128 + signum)


USAGE = "usage: train.py train   (SageMaker runs the image as `docker run IMAGE train`)"


def main(task: Task, argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["train"]:
        if args[:1] == ["serve"]:
            print(f"{task.name} is a training image; it has no inference server", file=sys.stderr)
        else:
            print(USAGE, file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    paths = SageMakerPaths.from_env()
    try:
        run(task, paths)
    except TrainingError as exc:
        print(f"training failed: {exc}", file=sys.stderr, flush=True)
        write_failure(paths, str(exc))
        return EXIT_TRAINING_ERROR
    except MemoryError:
        traceback.print_exc()
        write_failure(paths, "out of memory; use a larger instance or smaller model settings")
        return EXIT_INTERNAL_ERROR
    except Exception as exc:
        traceback.print_exc()
        write_failure(
            paths, f"internal error in the {task.name} image: {type(exc).__name__}: {exc}"
        )
        return EXIT_INTERNAL_ERROR
    return EXIT_OK
