"""Fixtures for the training-image tests (helpers in trainer_helpers.py)."""

from __future__ import annotations

import pytest

from aifactory_local.sample_data import SEED_HYPERPARAMETERS
from tests.trainers.trainer_helpers import IMAGES, Run, train_on


def _seed_run(tmp_path_factory: pytest.TempPathFactory, image: str) -> Run:
    tmp = tmp_path_factory.mktemp(f"{image}-seed")
    run = train_on(tmp, image, IMAGES[image](), SEED_HYPERPARAMETERS, parts=2)
    assert run.returncode == 0, run.stderr
    return run


@pytest.fixture(scope="session")
def tagger_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """slot_tagger trained once on the demo tagging data with the seed's hyperparameters."""
    return _seed_run(tmp_path_factory, "slot_tagger")


@pytest.fixture(scope="session")
def topic_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """topic_classifier trained once on the demo topic data with the seed's hyperparameters."""
    return _seed_run(tmp_path_factory, "topic_classifier")


@pytest.fixture(params=sorted(IMAGES))
def seed_run(request: pytest.FixtureRequest) -> Run:
    """Each image's seed run in turn."""
    fixture = {"slot_tagger": "tagger_run", "topic_classifier": "topic_run"}[request.param]
    return request.getfixturevalue(fixture)
