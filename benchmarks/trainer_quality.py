"""How well, and how fast, the reference training images learn the demo data.

Each image is run as SageMaker runs it (`python trainers/<image>/train.py train` on a fresh
/opt/ml tree, here a temporary folder) on the demo dataset with the seed's hyperparameters.
Printed per image: the weighted F1 on the held-out records, the baselines on the same records,
and the wall time of the whole run (interpreter start to exit).

- majority: always answer the most frequent training class (what the image reports beside
  its score in model/metadata.json);
- word-only (tagger): tag each word with its most frequent training tag, ignoring context;
  the gap to it is what the context window buys.

    .venv/bin/python benchmarks/trainer_quality.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAINERS = REPO / "trainers"
sys.path.append(str(TRAINERS))

from common.data import holdout_split  # noqa: E402
from common.hyperparameters import parse_hyperparameters  # noqa: E402
from common.metrics import classification_report  # noqa: E402
from slot_tagger.model import SlotTaggerTask  # noqa: E402

from aifactory_local.sample_data import (  # noqa: E402
    DEMO_DATA,
    SEED_HYPERPARAMETERS,
    write_training_input,
)


def run_once(image: str, records: list[dict[str, Any]]) -> tuple[float, dict, dict]:
    with tempfile.TemporaryDirectory(prefix=f"{image}-") as tmp:
        root = write_training_input(Path(tmp) / "opt_ml", records, SEED_HYPERPARAMETERS, parts=2)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(TRAINERS / image / "train.py"), "train"],
            env={**os.environ, "OPT_ML_ROOT": str(root)},
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{image} failed ({done.returncode}):\n{done.stderr}")
        report = json.loads((root / "output" / "data" / "evaluation.json").read_text())
        metadata = json.loads((root / "model" / "metadata.json").read_text())
    return elapsed, report, metadata


def word_only_f1(records: list[dict[str, Any]]) -> float:
    """Weighted F1 of tagging each word with its most frequent training tag."""
    task = SlotTaggerTask()
    sentences = [task.parse_record(r) for r in records]
    fraction = parse_hyperparameters(SEED_HYPERPARAMETERS).values.eval_fraction
    train, held = holdout_split([task.split_key(s) for s in sentences], fraction)
    tags_of: dict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    for i in train:
        for token, tag in zip(sentences[i].tokens, sentences[i].tags, strict=True):
            tags_of[token.lower()][tag] += 1
            overall[tag] += 1
    fallback = overall.most_common(1)[0][0]
    labels = sorted(overall)
    gold, predicted = [], []
    for i in held:
        for token, tag in zip(sentences[i].tokens, sentences[i].tags, strict=True):
            seen = tags_of.get(token.lower())
            guess = seen.most_common(1)[0][0] if seen else fallback
            gold.append(labels.index(tag))
            predicted.append(labels.index(guess))
    report = classification_report(np.array(gold), np.array(predicted), labels)
    return report["avg"]["f1-score"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per image (median time)")
    args = parser.parse_args(argv)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"demo data, seed hyperparameters (steps 400, batchsize 128); {cpus} CPU(s)\n")
    header = f"{'image':<18}{'scored':>14}{'weighted F1':>13}{'majority':>10}"
    print(f"{header}{'word-only':>11}{'wall time':>11}")
    for image, make in DEMO_DATA.items():
        records = make()
        runs = [run_once(image, records) for _ in range(args.runs)]
        times = [elapsed for elapsed, _, _ in runs]
        _, report, metadata = runs[0]
        if any(r != report for _, r, _ in runs):
            raise SystemExit(f"{image}: runs disagree; results should be repeatable")
        evaluation = metadata["evaluation"]
        scored = f"{report['avg']['support']} {evaluation['unit']}s"
        word_only = f"{word_only_f1(records):.4f}" if image == "slot_tagger" else "-"
        print(
            f"{image:<18}{scored:>14}{report['avg']['f1-score']:>13.4f}"
            f"{evaluation['majority_baseline_weighted_f1']:>10.4f}{word_only:>11}"
            f"{statistics.median(times):>10.2f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
