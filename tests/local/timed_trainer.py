"""A training image stand-in that trains for `sleep_seconds` (a hyperparameter, default 1)
and writes a small report: long enough for the tests of the training queue to see who waits."""

import json
import os
import time
from pathlib import Path

root = Path(os.environ["OPT_ML_ROOT"])
hyperparameters = json.loads((root / "input/config/hyperparameters.json").read_text())
print(f"training {os.environ['TRAINING_JOB_NAME']}", flush=True)
time.sleep(float(hyperparameters.get("sleep_seconds", "1")))
report = {"avg": {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 1}, "details": []}
(root / "output" / "data").mkdir(parents=True, exist_ok=True)
(root / "output" / "data" / "evaluation.json").write_text(json.dumps(report))
(root / "model" / "model.txt").write_text("trained")
print("done", flush=True)
