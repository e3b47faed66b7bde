"""Slot tagger: one tag per token, from a window of context around it.

Records: {"tokens": ["book", "a", "flight", "to", "Paris"], "tags": ["ACTION", "O", ...]}.

Each token is classified from the 2*windowSize+1 tokens centred on it. A position holds:
- the embedding (embeddingSize) of the lowercased word; words missing from the vocabulary
  share `<unk>`. Positions past the sentence's ends hold `<s>` on the left and `</s>` on the
  right when add_start_end_words is true, otherwise a single `<pad>`;
- a one-hot of the token's shape (lower, Capitalized, UPPER, digits, ...), which carries the
  case that lowercasing removes and helps with words the vocabulary lacks.
The concatenated window goes through the shared gated head (common.nn.GatedHead).

`<unk>` is trained by word dropout: while training, a word seen c times is replaced by
`<unk>` with probability 0.25 / (0.25 + c), so rare words teach the model about unknown ones.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.data import RecordError, label_text, require_list
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

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
WORD_DROPOUT_ALPHA = 0.25

SHAPES = ("lower", "Capitalized", "UPPER", "digits", "has-digit", "punctuation", "other", "edge")
EDGE_SHAPE = SHAPES.index("edge")

CONFIG_FILE = "tagger.json"


def word_shape(token: str) -> int:
    if token.isdigit():
        return 3
    if any(ch.isdigit() for ch in token):
        return 4
    if not any(ch.isalnum() for ch in token):
        return 5
    if token.islower():
        return 0
    if token.isupper() and len(token) > 1:
        return 2
    if token[:1].isupper() and (len(token) == 1 or token[1:].islower()):
        return 1
    return 6


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass
class Prepared:
    windows: np.ndarray  # [tokens, window] word ids
    shapes: np.ndarray  # [tokens, window] shape ids
    gold: np.ndarray  # [tokens] tag ids, -1 for a tag unknown to the model
    offsets: np.ndarray  # [sentences + 1] where each sentence's tokens start

    def token_indices(self, sentences: np.ndarray) -> np.ndarray:
        starts, ends = self.offsets[sentences], self.offsets[sentences + 1]
        return np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])


class SlotTaggerTask:
    name = "slot_tagger"
    task_def = "ml_tagger"
    unit = "token"

    def parse_record(self, record: dict[str, Any]) -> Sentence:
        tokens = require_list(record, "tokens")
        tags = require_list(record, "tags")
        if not tokens:
            raise RecordError('"tokens" is empty')
        if len(tokens) != len(tags):
            raise RecordError(
                f'"tokens" has {len(tokens)} items but "tags" has {len(tags)}; '
                "there must be one tag per token"
            )
        for i, token in enumerate(tokens):
            if not isinstance(token, str) or not token.strip():
                raise RecordError(f'"tokens"[{i}] must be a non-empty string')
        return Sentence(
            tuple(tokens), tuple(label_text(tag, f'"tags"[{i}]') for i, tag in enumerate(tags))
        )

    def split_key(self, example: Sentence) -> str:
        return json.dumps([example.tokens, example.tags], ensure_ascii=False)

    def labels_of(self, example: Sentence) -> Sequence[str]:
        return example.tags

    def build_model(
        self,
        examples: Sequence[Sentence],
        labels: list[str],
        hp: Hyperparameters,
        rng: np.random.Generator,
    ) -> TaggerModel:
        counts = Counter(token.lower() for ex in examples for token in ex.tokens)
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        if hp.vocab_size != -1:
            ranked = ranked[: hp.vocab_size]
        vocab = list(SPECIALS) + [w for w in ranked if w not in SPECIALS]
        width = 2 * hp.window_size + 1
        n_in = width * (hp.embedding_size + len(SHAPES))
        params: Params = {"embedding/words": embedding_table(rng, len(vocab), hp.embedding_size)}
        head = GatedHead(rng, n_in, hp.n_hidden_gate, hp.n_hidden_tag, len(labels))
        params.update(head.params)
        model = TaggerModel(vocab, labels, hp.window_size, hp.add_start_end_words, params)
        counts_by_id = np.array([counts.get(w, 0) for w in vocab], dtype=np.float64)
        model.replace_prob = np.where(
            np.arange(len(vocab)) >= len(SPECIALS),
            WORD_DROPOUT_ALPHA / (WORD_DROPOUT_ALPHA + np.maximum(counts_by_id, 1)),
            0.0,
        )
        return model


class TaggerModel:
    def __init__(
        self,
        vocab: list[str],
        labels: list[str],
        window_size: int,
        add_start_end_words: bool,
        params: Params,
    ) -> None:
        self.vocab = vocab
        self.word_ids = {word: i for i, word in enumerate(vocab)}
        self.labels = labels
        self.window_size = window_size
        self.add_start_end_words = add_start_end_words
        self.params = params
        self.head = GatedHead.from_params(params)
        self.head.params = params  # share arrays, so optimizer updates reach the head
        self.replace_prob = np.zeros(len(vocab))

    # -- encoding -------------------------------------------------------------------------
    def _sentence_windows(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        w = self.window_size
        left = self.word_ids[BOS if self.add_start_end_words else PAD]
        right = self.word_ids[EOS if self.add_start_end_words else PAD]
        unk = self.word_ids[UNK]
        ids = [left] * w + [self.word_ids.get(t.lower(), unk) for t in tokens] + [right] * w
        shapes = [EDGE_SHAPE] * w + [word_shape(t) for t in tokens] + [EDGE_SHAPE] * w
        view = np.lib.stride_tricks.sliding_window_view
        return view(np.array(ids, np.int32), 2 * w + 1), view(np.array(shapes, np.int8), 2 * w + 1)

    def prepare(self, examples: Sequence[Sentence]) -> Prepared:
        tag_ids = {label: i for i, label in enumerate(self.labels)}
        windows, shapes = [], []
        gold: list[int] = []
        lengths = [0]
        for ex in examples:
            win, shp = self._sentence_windows(ex.tokens)
            windows.append(win)
            shapes.append(shp)
            gold.extend(tag_ids.get(tag, -1) for tag in ex.tags)
            lengths.append(len(ex.tokens))
        return Prepared(
            np.concatenate(windows),
            np.concatenate(shapes),
            np.asarray(gold, np.int64),
            np.cumsum(lengths),
        )

    def _features(self, windows: np.ndarray, shapes: np.ndarray) -> np.ndarray:
        n = len(windows)
        embedded = self.params["embedding/words"][windows].reshape(n, -1)
        shape_onehot = np.eye(len(SHAPES), dtype=DTYPE)[shapes].reshape(n, -1)
        return np.concatenate([embedded, shape_onehot], axis=1)

    # -- training and inference -----------------------------------------------------------
    def loss_and_grads(
        self, prepared: Prepared, indices: np.ndarray, rng: np.random.Generator, dropout: float
    ) -> tuple[float, Params]:
        tokens = prepared.token_indices(indices)
        windows = prepared.windows[tokens]
        replace = rng.random(windows.shape) < self.replace_prob[windows]
        windows = np.where(replace, self.word_ids[UNK], windows)
        x = self._features(windows, prepared.shapes[tokens])
        loss, grads, d_x = self.head.loss_and_grads(x, prepared.gold[tokens], rng, dropout)
        embedding = self.params["embedding/words"]
        d_embedded = d_x[:, : windows.shape[1] * embedding.shape[1]]
        grads["embedding/words"] = scatter_rows(
            len(embedding), windows.ravel(), d_embedded.reshape(-1, embedding.shape[1])
        )
        return loss, grads

    def predict(self, prepared: Prepared, indices: np.ndarray) -> np.ndarray:
        tokens = prepared.token_indices(indices)
        x = self._features(prepared.windows[tokens], prepared.shapes[tokens])
        return np.argmax(self.head.logits(x), axis=1)

    def tag(self, tokens: Sequence[str]) -> list[str]:
        """Tag one tokenised sentence."""
        prepared = self.prepare([Sentence(tuple(tokens), tuple(self.labels[0] for _ in tokens))])
        return [self.labels[i] for i in self.predict(prepared, np.array([0]))]

    # -- persistence ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "type": "window gated MLP tagger",
            "vocabulary": len(self.vocab),
            "window": 2 * self.window_size + 1,
            "embedding": int(self.params["embedding/words"].shape[1]),
            "gate": self.head.n_gate,
            "tag": int(self.params["tag/b"].shape[0]),
            "classes": len(self.labels),
            "add_start_end_words": self.add_start_end_words,
        }

    def save(self, model_dir: Path) -> None:
        config = {
            "vocab": self.vocab,
            "labels": self.labels,
            "window_size": self.window_size,
            "add_start_end_words": self.add_start_end_words,
            "shapes": list(SHAPES),
        }
        save_model(model_dir, dict(self.params), config, CONFIG_FILE)

    @classmethod
    def load(cls, model_dir: Path) -> TaggerModel:
        params, config = load_model(model_dir, CONFIG_FILE)
        return cls(
            config["vocab"],
            config["labels"],
            config["window_size"],
            config["add_start_end_words"],
            params,
        )
