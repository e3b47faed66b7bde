"""The job name's stamp is UTC whatever the machine's local time zone is."""

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from aifactory import jobs, timefmt

INSTANT = datetime(2026, 3, 31, 23, 59, 58, 500000, tzinfo=UTC)


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_job_name_stamp_is_the_utc_time_under_a_non_utc_zone(tokyo, monkeypatch):
    # Given a machine in Tokyo (UTC+9) and a clock pinned to 2026-03-31 23:59:58 UTC
    assert time.localtime(INSTANT.timestamp()).tm_mday == 1  # already April 1st there
    monkeypatch.setattr(timefmt, "now", lambda: INSTANT)
    # When a job name is made
    name = jobs.new_job_name()
    # Then its stamp is the UTC one, not Tokyo's 2026-04-01 08:59:58
    assert re.fullmatch(r"sage-maker-train-20260331-235958-[0-9a-f]{6}", name), name
