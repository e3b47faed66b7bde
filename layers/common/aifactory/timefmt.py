"""Timestamps: stored as sortable ISO-8601 UTC strings, shown in the seed's format."""

from datetime import UTC, datetime

SEED_FORMAT = "%Y-%m-%d %H:%M:%S"


def now() -> datetime:
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    """Sortable storage form, e.g. 2026-11-27T07:18:39.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def to_seed(value: str | datetime | None) -> str | None:
    """The seed's `YYYY-MM-DD HH:MM:SS` in UTC, or None."""
    if value is None:
        return None
    moment = from_iso(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(SEED_FORMAT)


def from_epoch_millis(millis: int | float) -> datetime:
    return datetime.fromtimestamp(float(millis) / 1000.0, UTC)
