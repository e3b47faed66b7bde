"""Fixtures shared by every suite."""

from collections.abc import Iterator

import pytest

from tests.support import LogCapture, capture_logs


@pytest.fixture
def factory_logs() -> Iterator[LogCapture]:
    """Everything the Factory logs during the test, as it would reach CloudWatch."""
    with capture_logs() as capture:
        yield capture
