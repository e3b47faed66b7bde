"""Topic classifier: one label per text, from the mean embedding of its words and word pairs.

Records: {"text": "The striker scored a late goal.", "label": "sports"}.

A text is lowercased and split into words (Unicode letters and digits). Its features are the
words and the pairs of neighbouring words; with add_start_end_words the text is wrapped in
`<s>` ... `</s>` first, so pairs also mark how a text starts and ends. The vocabulary holds
the training split's words, and its word pairs seen at least twice, most frequent first, cut
to vocabSize entries when that is not -1. Features missing from it count as `<unk>`.

The text's vector is the mean of its features' embeddings (as fastText does), and goes
through the shared gated head (common.nn.GatedHead).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.data import RecordError, require_label
from common.hyperparameters import Hyperparameters
from common.nn import (
    DTYPE,
    GatedHead,
    Params,
    embedding_table,
    load_model,
    save_model,
    scatter_rows,
)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIALS = (UNK, BOS, EOS)
MIN_PAIR_COUNT = 2
WORD = re.compile(r"\w+")

CONFIG_FILE = "classifier.json"


@dataclass(frozen=True)
class Text:
    text: str
    label: str


def features(text: str, add_start_end_words: bool) -> list[str]:
    words = WORD.findall(text.lower())
    if add_start_end_words:
        words = [BOS, *words, EOS]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


@dataclass
class Prepared:
    ids: np.ndarray  # every text's feature ids, one after another
    offsets: np.ndarray  # [texts + 1] where each text's features start
    gold: np.ndarray  # [texts] label ids, -1 for a label unknown to the model

    def gather(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature ids of the chosen texts, and the position of each text's first one."""
        starts, ends = self.offsets[texts], self.offsets[texts + 1]
        ids = np.concatenate([self.ids[s:e] for s, e in zip(starts, ends, strict=True)])
        return ids, np.concatenate([[0], np.cumsum(ends - starts)[:-1]])


class TopicClassifierTask:
    name = "topic_classifier"
    task_def = "ml_topic"
    unit = "text"

    def parse_record(self, record: dict[str, Any]) -> Text:
        if "text" not in record:
            raise RecordError('the record has no "text" field')
        text = record["text"]
        if not isinstance(text, str) or not text.strip():
            raise RecordError('"text" must be a non-empty string')
        return Text(text, require_label(record, "label"))

    def split_key(self, example: Text) -> str:
        return json.dumps([example.text, example.label], ensure_ascii=False)

    def labels_of(self, example: Text) -> Sequence[str]:
        return (example.label,)

    def build_model(
        self,
        examples: Sequence[Text],
        labels: list[str],
        hp: Hyperparameters,
        rng: np.random.Generator,
    ) -> TopicModel:
        counts = Counter(f for ex in examples for f in features(ex.text, hp.add_start_end_words))
        kept = [f for f, c in counts.items() if c >= MIN_PAIR_COUNT or " " not in f]
        ranked = sorted((f for f in kept if f not in SPECIALS), key=lambda f: (-counts[f], f))
        if hp.vocab_size != -1:
            ranked = ranked[: hp.vocab_size]
        vocab = list(SPECIALS) + ranked
        params: Params = {"embedding/features": embedding_table(rng, len(vocab), hp.embedding_size)}
        head = GatedHead(rng, hp.embedding_size, hp.n_hidden_gate, hp.n_hidden_tag, len(labels))
        params.update(head.params)
        return TopicModel(vocab, labels, hp.add_start_end_words, params)


class TopicModel:
    def __init__(
        self, vocab: list[str], labels: list[str], add_start_end_words: bool, params: Params
    ) -> None:
        self.vocab = vocab
        self.feature_ids = {feature: i for i, feature in enumerate(vocab)}
        self.labels = labels
        self.add_start_end_words = add_start_end_words
        self.params = params
        self.head = GatedHead.from_params(params)
        self.head.params = params  # share arrays, so optimizer updates reach the head

    def prepare(self, examples: Sequence[Text]) -> Prepared:
        label_ids = {label: i for i, label in enumerate(self.labels)}
        unk = self.feature_ids[UNK]
        ids: list[int] = []
        lengths = [0]
        for ex in examples:
            feats = features(ex.text, self.add_start_end_words) or [UNK]
            ids.extend(self.feature_ids.get(f, unk) for f in feats)
            lengths.append(len(feats))
        gold = [label_ids.get(ex.label, -1) for ex in examples]
        return Prepared(np.asarray(ids, np.int64), np.cumsum(lengths), np.asarray(gold, np.int64))

    def _mean_embedding(self, ids: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sums = np.add.reduceat(self.params["embedding/features"][ids], starts, axis=0)
        lengths = np.diff(np.append(starts, len(ids))).astype(DTYPE)
        return sums / lengths[:, None], lengths

    def loss_and_grads(
        self, prepared: Prepared, indices: np.ndarray, rng: np.random.Generator, dropout: float
    ) -> tuple[float, Params]:
        ids, starts = prepared.gather(indices)
        x, lengths = self._mean_embedding(ids, starts)
        loss, grads, d_x = self.head.loss_and_grads(x, prepared.gold[indices], rng, dropout)
        # Each feature of a text gets the text's gradient divided by the text's length.
        per_feature = np.repeat(d_x / lengths[:, None], lengths.astype(np.int64), axis=0)
        grads["embedding/features"] = scatter_rows(
            len(self.params["embedding/features"]), ids, per_feature
        )
        return loss, grads

    def predict(self, prepared: Prepared, indices: np.ndarray) -> np.ndarray:
        ids, starts = prepared.gather(indices)
        x, _ = self._mean_embedding(ids, starts)
        return np.argmax(self.head.logits(x), axis=1)

    def classify(self, text: str) -> str:
        """The label of one text."""
        prepared = self.prepare([Text(text, self.labels[0])])
        return self.labels[int(self.predict(prepared, np.array([0]))[0])]

    def describe(self) -> dict[str, Any]:
        return {
            "type": "mean-embedding gated MLP classifier",
            "vocabulary": len(self.vocab),
            "embedding": int(self.params["embedding/features"].shape[1]),
            "gate": self.head.n_gate,
            "tag": int(self.params["tag/b"].shape[0]),
            "classes": len(self.labels),
            "add_start_end_words": self.add_start_end_words,
        }

    def save(self, model_dir: Path) -> None:
        config = {
            "vocab": self.vocab,
            "labels": self.labels,
            "add_start_end_words": self.add_start_end_words,
        }
        save_model(model_dir, dict(self.params), config, CONFIG_FILE)

    @classmethod
    def load(cls, model_dir: Path) -> TopicModel:
        params, config = load_model(model_dir, CONFIG_FILE)
        return cls(config["vocab"], config["labels"], config["add_start_end_words"], params)
