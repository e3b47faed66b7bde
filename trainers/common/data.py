"""Reading a channel's JSON Lines files, and the deterministic hold-out split."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from common.sagemaker import TrainingError


class RecordError(ValueError):
    """A record that does not fit the task's schema. The reader adds file and line."""


def list_data_files(channel_dir: Path) -> list[Path]:
    """Every regular, non-hidden file under the channel, in a stable order.

    The Factory stages a dataset as one or several JSON Lines parts; names and extensions
    are not relied on. Files ending in .gz are read through gzip.
    """
    if not channel_dir.is_dir():
        raise TrainingError(f"the data channel directory {channel_dir} does not exist")
    files = [
        path
        for path in channel_dir.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(channel_dir).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(channel_dir).as_posix())


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_records[T](channel_dir: Path, parse: Callable[[dict[str, Any]], T]) -> list[T]:
    """Parse every JSON Lines record of a channel; blank lines are skipped.

    The first bad line stops the job with a TrainingError that names the file and line.
    """
    records: list[T] = []
    for path in list_data_files(channel_dir):
        name = f"{channel_dir.name}/{path.relative_to(channel_dir).as_posix()}"
        try:
            with _open(path) as handle:
                for number, raw in enumerate(handle, start=1):
                    raw = raw.strip()
                    if not raw:
                        continue
                    records.append(_parse_line(raw, number, name, parse))
        except (OSError, EOFError) as exc:  # unreadable file or broken gzip stream
            raise TrainingError(f"cannot read {name}: {exc}") from exc
    return records


def _parse_line[T](raw: bytes, number: int, name: str, parse: Callable[[dict[str, Any]], T]) -> T:
    where = f"{name} line {number}"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TrainingError(f"{where}: not valid UTF-8 text") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainingError(
            f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); "
            "each line must hold one JSON object"
        ) from None
    if not isinstance(value, dict):
        raise TrainingError(f"{where}: expected a JSON object, got {_json_type(value)}")
    try:
        return parse(value)
    except RecordError as exc:
        raise TrainingError(f"{where}: {exc}") from None


def _json_type(value: Any) -> str:
    match value:
        case list():
            return "an array"
        case str():
            return "a string"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case None:
            return "null"
        case dict():
            return "an object"
    return type(value).__name__


def require_label(record: dict[str, Any], field: str) -> str:
    """A class label: a non-empty string, or an integer (kept as its decimal string)."""
    if field not in record:
        raise RecordError(f'the record has no "{field}" field')
    return label_text(record[field], f'"{field}"')


def label_text(value: Any, what: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RecordError(f"{what} must be a non-empty string or an integer, got {_json_type(value)}")


def require_list(record: dict[str, Any], field: str) -> list[Any]:
    if field not in record:
        raise RecordError(f'the record has no "{field}" field')
    value = record[field]
    if not isinstance(value, list):
        raise RecordError(f'"{field}" must be an array, got {_json_type(value)}')
    return value


def _unit_hash(key: str) -> float:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def holdout_split(keys: Sequence[str], fraction: float) -> tuple[list[int], list[int]]:
    """Split record indices into (train, evaluation), deterministically.

    A record goes to evaluation when the hash of its content falls below `fraction`, so the
    split does not depend on file order or paging, and duplicates stay on one side (no
    leakage from training into evaluation). Should either side come out empty (tiny data),
    the records with the smallest hashes are held out instead.
    """
    n = len(keys)
    if n < 2:
        raise TrainingError(
            f"found {n} record{'' if n == 1 else 's'}; at least 2 are needed to hold out "
            "an evaluation split"
        )
    hashes = [_unit_hash(key) for key in keys]
    evaluation = [i for i in range(n) if hashes[i] < fraction]
    if 0 < len(evaluation) < n:
        held = set(evaluation)
        return [i for i in range(n) if i not in held], evaluation
    k = min(n - 1, max(1, math.ceil(n * fraction)))
    ranked = sorted(range(n), key=lambda i: (hashes[i], i))
    held = set(ranked[:k])
    return [i for i in range(n) if i not in held], sorted(held)
