"""Deterministic synthetic datasets for the demo, the benchmarks and the tests.

Nothing is downloaded: every record is generated from the templates below with a seeded
`random.Random`, so the same (n, seed) always gives the same records.

- `tagging_records`: sentences of a booking assistant for the slot_tagger image
  ({"tokens": [...], "tags": [...]}, task ml_tagger). Tags: O, ACTION, OBJECT, CITY, PERSON,
  MONTH, DAY. Several words need their context: "book"/"order"/"check" are actions or
  objects, "may" is a modal or a month, "June" a month or a person, and names such as
  "Paris", "Austin" or "Florence" are cities or people.
- `topic_records`: short news-like texts for the topic_classifier image
  ({"text": "...", "label": "..."}, task ml_topic), five topics of unequal size whose
  vocabulary overlaps ("match", "record", "rate", "bank", "virus", ...).
- `bad_records`: datasets a trainer must reject, one kind of fault each.
- `write_jsonl`, `write_training_input`: lay records out as SageMaker would for a container.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aifactory_local.example import seed_hyperparameters

# The hyperparameters of the seed's create_training_job example, as SageMaker passes them
# (from the sample request, events/requests/create_training_job.json).
SEED_HYPERPARAMETERS: dict[str, str] = seed_hyperparameters()

# --------------------------------------------------------------------------------------
# Tagging
# --------------------------------------------------------------------------------------
TAGS = ("O", "ACTION", "OBJECT", "CITY", "PERSON", "MONTH", "DAY")

# fmt: off
CITIES = ("London", "Berlin", "Tokyo", "Hanoi", "Boston", "Denver", "Lima", "Oslo", "Da Nang",
          "New York", "San Diego", "Ho Chi Minh City")
PEOPLE = ("Anna", "Minh", "Linh", "David", "Maria", "Tom", "Lan", "Peter", "Huong", "Carlos")
# Each of these is a city in some sentences and a person in others.
CITY_OR_PERSON = ("Paris", "Sydney", "Austin", "Florence", "Madison", "Charlotte", "Victoria",
                  "Jackson")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
# fmt: on
BOOKING_VERBS = ("book", "reserve", "cancel", "change", "confirm", "need", "get")
ORDER_VERBS = ("order", "book", "get", "call")
BOOKABLE = ("flight", "table", "room", "ticket", "seat", "hotel", "train", "car")
ORDERABLE = ("taxi", "pizza", "car", "cab")

# Templates: words are tagged O unless written "word/TAG"; {slot}s are filled below.
TAGGING_TEMPLATES = (
    "{act} a {obj} to {city} on {month} {day}",
    "please {act} the {obj} in {city} for {month} {day}",
    "can you {act} my {obj} from {city} to {city}",
    "may I {act} a {obj} in {city} ?",
    "may we {act} a {obj} for {day} {month}",
    "I want to {act} a {obj} for the {dayth} of {month}",
    "{person} wants to fly to {city} in {month}",
    "{person} may fly to {city} in {month}",
    "{person} may/O {act} the {obj} tomorrow",
    "call {person} about the {obj} to {city}",
    "send the book/OBJECT to {person} please",
    "I read a book/OBJECT about {city} by {person}",
    "return the book/OBJECT to the library in {city}",
    "{person} wrote a book/OBJECT about {month} in {city}",
    "remind {person} that the {obj} is on {month} {day}",
    "what is the weather in {city} in {month} ?",
    "meet {person} in {city} on the {dayth} of {month}",
    "where is my order/OBJECT ?",
    "{verb_check} my order/OBJECT from {month} {day}",
    "{order} a {taxi} to {city} for {person}",
    "{order} a {taxi} for {person} on {month} {day}",
    "{person} and {person} arrive in {city} on {month} {day}",
    "bring the check/OBJECT to {person}",
    "check/ACTION the {obj} in {city} for {month}",
    "text {person} when the {obj} from {city} lands",
    "is {person} still in {city} in {month} ?",
    "I will be in {city} from {month} {day} to {month} {day}",
    "{person} may/O visit {city} in May/MONTH",
    "in {month} {person} moves to {city}",
    "ask {person} if the {obj} to {city} is ready",
    # Here the word three places before the name decides between a person and a city.
    "send the {obj} to {person}",
    "{act} the {obj} to {city}",
    "show the {obj} to {person} tonight",
    "{act} one {obj} to {city} tonight",
)


# A share of the names are made up on the spot, so the evaluation split holds names that
# training never saw: the model has to read the context ("fly to X", "call X").
RARE_NAME_RATE = 0.15
# fmt: off
SYLLABLES = ("ka", "lo", "mi", "ra", "ven", "to", "sa", "bel", "dor", "ni", "ru", "an", "mar",
             "tes", "qui", "zo")
# fmt: on


def _rare_name(rng: random.Random) -> str:
    return _title("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))))


def _title(word: str) -> str:
    return word[:1].upper() + word[1:]


def _tagging_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    template = rng.choice(TAGGING_TEMPLATES)
    tokens: list[str] = []
    tags: list[str] = []

    def add(words: str, tag: str) -> None:
        for word in words.split():
            tokens.append(word)
            tags.append(tag)

    def city() -> str:
        roll = rng.random()
        if roll < RARE_NAME_RATE:
            return _rare_name(rng)
        return rng.choice(CITY_OR_PERSON if roll < 0.45 else CITIES)

    def person() -> str:
        roll = rng.random()
        if roll < RARE_NAME_RATE:
            return _rare_name(rng)
        if roll < 0.2:
            return "June"  # a month's name as a person's name
        return rng.choice(CITY_OR_PERSON if roll < 0.5 else PEOPLE)

    fillers: dict[str, Callable[[], tuple[str, str]]] = {
        "act": lambda: (rng.choice(BOOKING_VERBS), "ACTION"),
        "order": lambda: (rng.choice(ORDER_VERBS), "ACTION"),
        "verb_check": lambda: (rng.choice(("check", "cancel", "change")), "ACTION"),
        "obj": lambda: (rng.choice(BOOKABLE), "OBJECT"),
        "taxi": lambda: (rng.choice(ORDERABLE), "OBJECT"),
        "city": lambda: (city(), "CITY"),
        "person": lambda: (person(), "PERSON"),
        "month": lambda: (rng.choice(MONTHS), "MONTH"),
        "day": lambda: (str(rng.randint(1, 28)), "DAY"),
        "dayth": lambda: (_ordinal(rng.randint(1, 28)), "DAY"),
    }
    for part in template.split():
        if part.startswith("{"):
            add(*fillers[part.strip("{}")]())
        elif "/" in part:
            word, tag = part.split("/")
            add(word, tag)
        else:
            add(part, "O")

    if rng.random() < 0.15:
        tokens.insert(0, rng.choice(("hi", "hey", "ok", "please")))
        tags.insert(0, "O")
    if rng.random() < 0.3:  # chat style: everything lowercase, so case does not give names away
        tokens = [t.lower() for t in tokens]
    else:
        tokens[0] = _title(tokens[0])
    return tokens, tags


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def tagging_records(n: int = 600, seed: int = 7) -> list[dict[str, Any]]:
    """`n` tagged sentences: {"tokens": [...], "tags": [...]}."""
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not security
    records = []
    for _ in range(n):
        tokens, tags = _tagging_sentence(rng)
        records.append({"tokens": tokens, "tags": tags})
    return records


# --------------------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------------------
# Topic weights make the classes unequal, so the majority baseline is not a coin toss.
# fmt: off
TOPICS: dict[str, dict[str, Any]] = {
    "sports": {
        "weight": 0.30,
        "subjects": ("the team", "the striker", "our coach", "the players", "the champion",
                     "the keeper", "the young runner"),
        "verbs": ("won", "lost", "played", "drew", "trained for", "prepared for", "celebrated"),
        "objects": ("the match", "the final", "a new record", "the league title", "the tournament",
                    "the derby", "the away game"),
        "tails": ("on the court", "after a late goal", "in the second half", "at the stadium",
                  "on a wet pitch", "with a great shot", "despite a high score against them",
                  "before the return leg"),
    },
    "finance": {
        "weight": 0.25,
        "subjects": ("the bank", "investors", "the central bank", "the fund", "shareholders",
                     "the market", "traders"),
        "verbs": ("raised", "cut", "reported", "sold", "bought", "warned about", "priced"),
        "objects": ("the interest rate", "its quarterly profit", "record earnings", "the stock",
                    "new bonds", "a credit score model", "the loan charge"),
        "tails": ("after the market crash", "as shares fell", "to calm a bank run",
                  "before the earnings call", "at a higher rate", "in the court filing",
                  "with strong returns", "during the investor pitch"),
    },
    "technology": {
        "weight": 0.20,
        "subjects": ("the startup", "engineers", "the app", "the new phone", "developers",
                     "the chip maker", "the software team"),
        "verbs": ("released", "fixed", "launched", "tested", "updated", "patched", "shipped"),
        "objects": ("a security update", "the server", "a faster chip", "the new tablet",
                    "the search feature", "a computer virus scanner", "the battery charger"),
        "tails": ("after the app crash", "to run the program faster", "on every cell phone",
                  "with a pattern match engine", "to record data in the cloud",
                  "before the product pitch", "at a higher frame rate", "for the data center"),
    },
    "health": {
        "weight": 0.15,
        "subjects": ("doctors", "the hospital", "nurses", "researchers", "the clinic", "patients",
                     "the health agency"),
        "verbs": ("treated", "studied", "warned about", "tested", "reported", "tracked",
                  "approved"),
        "objects": ("a new virus", "the flu shot", "a vaccine", "the heart rate data",
                    "blood cells", "the medical record", "a new tablet for pain"),
        "tails": ("in the emergency room", "after the outbreak", "with a higher risk score",
                  "to run more trials", "for older patients", "during the winter season",
                  "before the health court ruling", "at the clinic"),
    },
    "travel": {
        "weight": 0.10,
        "subjects": ("tourists", "the airline", "our guide", "travelers", "the hotel",
                     "the cruise line", "backpackers"),
        "verbs": ("booked", "visited", "explored", "cancelled", "reviewed", "recommended",
                  "planned"),
        "objects": ("a return flight", "the night market", "a beach resort", "the old town",
                    "a river cruise", "the mountain trail", "a cheap room rate"),
        "tails": ("along the river bank", "before the summer trip", "with a local guide",
                  "after a long flight", "near the tennis court", "for the holiday season",
                  "to record the journey", "at the train station"),
    },
}
# fmt: on

COMMON_SENTENCES = (
    "people talked about it all week",
    "the news spread fast",
    "it was on the radio this morning",
    "many were surprised by the result",
    "more details are expected next week",
    "the report came out on monday",
    "critics were not convinced",
    "officials declined to comment",
)


def _topic_sentence(rng: random.Random, topic: str) -> str:
    parts = TOPICS[topic]
    words = [rng.choice(parts[key]) for key in ("subjects", "verbs", "objects")]
    if rng.random() < 0.7:
        words.append(rng.choice(parts["tails"]))
    return " ".join(words)


def topic_records(n: int = 500, seed: int = 7) -> list[dict[str, Any]]:
    """`n` short texts with a topic label: {"text": "...", "label": "sports"}."""
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not security
    names = list(TOPICS)
    weights = [TOPICS[name]["weight"] for name in names]
    records = []
    for _ in range(n):
        topic = rng.choices(names, weights)[0]
        sentences = [_topic_sentence(rng, topic)]
        if rng.random() < 0.4:
            sentences.append(_topic_sentence(rng, topic))
        if rng.random() < 0.2:  # a sentence about something else blurs the text's topic
            sentences.append(_topic_sentence(rng, rng.choice([t for t in names if t != topic])))
        if rng.random() < 0.5:
            sentences.append(rng.choice(COMMON_SENTENCES))
        rng.shuffle(sentences)
        text = ". ".join(_title(s) for s in sentences) + "."
        records.append({"text": text, "label": topic})
    return records


# --------------------------------------------------------------------------------------
# Data a trainer must reject
# --------------------------------------------------------------------------------------
BAD_KINDS = (
    "missing_tags",  # tagging: one record has no "tags"
    "length_mismatch",  # tagging: one record has fewer tags than tokens
    "single_tag",  # tagging: every tag is "O"
    "missing_label",  # topic: one record has no "label"
    "single_topic",  # topic: every text has the same label
)


def bad_records(kind: str = "missing_tags", n: int = 40, seed: int = 7) -> list[dict[str, Any]]:
    """A small dataset with one kind of fault (see BAD_KINDS); the fault is in the middle."""
    middle = n // 2
    if kind in ("missing_tags", "length_mismatch", "single_tag"):
        records = tagging_records(n, seed)
        if kind == "missing_tags":
            del records[middle]["tags"]
        elif kind == "length_mismatch":
            records[middle]["tags"] = records[middle]["tags"][:-1]
        else:
            records = [{"tokens": r["tokens"], "tags": ["O"] * len(r["tokens"])} for r in records]
        return records
    if kind in ("missing_label", "single_topic"):
        records = topic_records(n, seed)
        if kind == "missing_label":
            del records[middle]["label"]
        else:
            records = [{"text": r["text"], "label": "sports"} for r in records]
        return records
    raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(BAD_KINDS)}")


# name -> (records function, the Factory task_def, the image tag that trains it)
DATASETS: dict[str, tuple[Callable[..., list[dict[str, Any]]], str, str]] = {
    "tagging": (tagging_records, "ml_tagger", "slot_tagger"),
    "topic": (topic_records, "ml_topic", "topic_classifier"),
    "bad": (bad_records, "ml_tagger", "slot_tagger"),
}


# image tag -> the demo data it trains on
DEMO_DATA: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "slot_tagger": tagging_records,
    "topic_classifier": topic_records,
}


def dataset(name: str, n: int | None = None, seed: int = 7) -> list[dict[str, Any]]:
    """Records of a named dataset (see DATASETS), with its default size unless `n` is given."""
    try:
        make = DATASETS[name][0]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
    return make(seed=seed) if n is None else make(n=n, seed=seed)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def write_jsonl(records: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """One JSON document per line, UTF-8, as the Factory stages a dataset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_training_input(
    root: Path,
    records: list[dict[str, Any]],
    hyperparameters: Mapping[str, str] | None = None,
    *,
    parts: int = 1,
) -> Path:
    """Lay out a SageMaker training root (what /opt/ml holds when a container starts).

    The records are split over `parts` JSON Lines files in input/data/train/. Returns `root`;
    run a trainer on it with OPT_ML_ROOT=root.
    """
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    hp = SEED_HYPERPARAMETERS if hyperparameters is None else hyperparameters
    (config / "hyperparameters.json").write_text(json.dumps(dict(hp), indent=2))
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                "train": {
                    "ContentType": "application/jsonlines",
                    "TrainingInputMode": "File",
                    "S3DistributionType": "FullyReplicated",
                    "RecordWrapperType": "None",
                }
            },
            indent=2,
        )
    )
    resources = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
    (config / "resourceconfig.json").write_text(json.dumps(resources))
    train = root / "input" / "data" / "train"
    train.mkdir(parents=True, exist_ok=True)
    size = -(-len(records) // parts) if records else 0
    for part in range(parts):
        write_jsonl(records[part * size : (part + 1) * size], train / f"part-{part:05d}.jsonl")
    for sub in ("model", "output/data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root
