"""Tests of the training images, the sample data and the local dataset endpoint.

Some tests import the images' modules (`common`, `slot_tagger`, `topic_classifier`) in process,
the way each image's train.py does: with trainers/ on sys.path. This package's import sets
that up before any of its test modules loads.
"""

import sys
from pathlib import Path

TRAINERS = Path(__file__).resolve().parents[2] / "trainers"
if str(TRAINERS) not in sys.path:
    sys.path.append(str(TRAINERS))
