"""The saved models: they reload, reproduce the report, and use context as intended."""

from __future__ import annotations

import numpy as np
import pytest
from common.data import holdout_split, read_records
from common.hyperparameters import parse_hyperparameters
from common.metrics import classification_report
from slot_tagger.model import SlotTaggerTask, TaggerModel
from topic_classifier.model import TopicClassifierTask, TopicModel

from tests.trainers.trainer_helpers import Run

TASKS = {
    "slot_tagger": (SlotTaggerTask(), TaggerModel),
    "topic_classifier": (TopicClassifierTask(), TopicModel),
}


def test_the_saved_model_reproduces_the_report(seed_run: Run) -> None:
    # Given the model an image saved, and the records it was given
    task, model_class = TASKS[seed_run.image]
    model = model_class.load(seed_run.root / "model")
    records = read_records(seed_run.root / "input" / "data" / "train", task.parse_record)
    hp = parse_hyperparameters(seed_run.metadata["hyperparameters"]).values
    _, held = holdout_split([task.split_key(r) for r in records], hp.eval_fraction)
    evaluation = [records[i] for i in held]
    # When the evaluation records are predicted again
    prepared = model.prepare(evaluation)
    predicted = model.predict(prepared, np.arange(len(evaluation)))
    # Then the report is the one the image wrote
    labels = list(model.labels)
    gold = [labels.index(label) for r in evaluation for label in task.labels_of(r)]
    assert classification_report(np.array(gold), predicted, labels) == seed_run.evaluation


@pytest.fixture(scope="module")
def tagger(tagger_run: Run) -> TaggerModel:
    return TaggerModel.load(tagger_run.root / "model")


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        # "book": an action before an object, an object after a determiner
        ("book a flight to Paris", "ACTION O OBJECT O CITY"),
        ("I read a book about Oslo by Paris", "O O O OBJECT O CITY O PERSON"),
        # "may": a modal before a pronoun, a month after "in"
        ("May I book a table ?", "O O ACTION O OBJECT O"),
        ("Anna wants to fly to Lima in May", "PERSON O O O O CITY O MONTH"),
        # "June": a person who is called, a month before a day
        ("call june about the ticket to tokyo", "O PERSON O O OBJECT O CITY"),
        ("book a seat to Berlin on June 4", "ACTION O OBJECT O CITY O MONTH DAY"),
        # names never seen in training are tagged from their context
        ("call Zorbinax about the ticket to Hanoi", "O PERSON O O OBJECT O CITY"),
        ("david wants to fly to zorbinax in march", "PERSON O O O O CITY O MONTH"),
    ],
)
def test_the_tagger_reads_ambiguous_words_from_their_context(
    tagger: TaggerModel, sentence: str, expected: str
) -> None:
    assert " ".join(tagger.tag(sentence.split())) == expected


@pytest.fixture(scope="module")
def classifier(topic_run: Run) -> TopicModel:
    return TopicModel.load(topic_run.root / "model")


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("The striker won the match after a late goal.", "sports"),
        ("The central bank raised the interest rate as shares fell.", "finance"),
        ("Engineers patched the server after the app crash.", "technology"),
        ("Doctors studied a new virus in the emergency room.", "health"),
        ("Tourists booked a river cruise with a local guide.", "travel"),
    ],
)
def test_the_classifier_finds_the_topic(classifier: TopicModel, text: str, label: str) -> None:
    assert classifier.classify(text) == label
