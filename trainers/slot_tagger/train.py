"""Entry point of the slot_tagger image: `python train.py train`.

SageMaker runs the image as `docker run IMAGE train`. The script reads JSON Lines records
{"tokens": [...], "tags": [...]} from the `train` channel under $OPT_ML_ROOT (default /opt/ml)
and writes the model and evaluation.json. See trainers/README.md.
"""

import os
import signal
import sys
from pathlib import Path


# A stop or a spot interruption may come while NumPy is still loading: end as a stopped run
# (status 143) rather than be killed outright. main() then installs the full handler.
def _stop_while_starting(signum: int, _frame: object) -> None:
    print("SIGTERM received while starting: stopping", flush=True)
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _stop_while_starting)

# The layers are small: one BLAS thread is faster than several, and keeps every run's numbers
# identical. Must be set before NumPy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# Run from any working directory: the shared code lives beside this image's folder.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.training import main  # noqa: E402
from slot_tagger.model import SlotTaggerTask  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(SlotTaggerTask()))
