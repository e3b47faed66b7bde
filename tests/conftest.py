"""Fixtures shared by every suite."""

from collections.abc import Iterator

import pytest

from tests.support import LogCapture, capture_logs


@pytest.fixture
def factory_logs() -> Iterator[LogCapture]:
    """Everything the Factory logs during the test, as it would reach CloudWatch."""
    with capture_logs() as capture:
        yield capture


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Test ids a command line can name again: characters outside printable ASCII (and the
    backslash) are spelled as their code points, e.g. "caf\\xe9" becomes "caf-u00e9-".
    Mutation testing reruns tests by id, and an escaped id does not select its test."""
    if not isinstance(val, str) or all(" " <= c <= "~" and c != "\\" for c in val):
        return None
    return "".join(c if " " <= c <= "~" and c != "\\" else f"-u{ord(c):04x}-" for c in val)
