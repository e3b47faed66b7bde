"""A training image stand-in for `--trainer IMAGE=COMMAND`: checks what SageMaker's contract
gives a container, and writes a scikit-learn style report into model/ (not output/data/)."""

import json
import os
import sys
from pathlib import Path

root = Path(os.environ["OPT_ML_ROOT"])
assert sys.argv[-1] == "train", sys.argv
# The training job's name: the Factory's job's, or AWS Batch's AWSBatch<job name><hash>.
assert os.environ["TRAINING_JOB_NAME"].removeprefix("AWSBatch").startswith("sage-maker-train-")
assert "AWS_SECRET_ACCESS_KEY" not in os.environ  # a container gets no host credentials
hyperparameters = json.loads((root / "input/config/hyperparameters.json").read_text())
channels = json.loads((root / "input/config/inputdataconfig.json").read_text())
records = [
    json.loads(line)
    for path in sorted((root / "input/data/train").iterdir())
    for line in path.read_text().splitlines()
    if line.strip()
]
report = {
    "yes": {"precision": 0.5, "recall": 0.25, "f1-score": 1 / 3, "support": len(records)},
    "no": {"precision": 1.0, "recall": 0.875, "f1-score": 0.9333, "support": 8.0},
    "accuracy": 0.8,
    "weighted avg": {
        "precision": 0.75,
        "recall": 0.5,
        "f1-score": 0.6,
        "support": len(records) + 8,
    },
}
(root / "model" / "evaluation.json").write_text(json.dumps(report))
(root / "model" / "seen.json").write_text(
    json.dumps({"records": len(records), "channels": sorted(channels), "hp": hyperparameters})
)
print(f"fake trainer saw {len(records)} records")
