"""The terminal lines: colour only where it is wanted, and each kind of event in words."""

import io
import logging

import pytest

from aifactory_local.terminal import FunctionLogLines, Terminal, f1_of, use_colour


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "environ", "expected"),
    [
        (_Tty(), {}, True),
        (_Tty(), {"NO_COLOR": "1"}, False),
        (_Tty(), {"TERM": "dumb"}, False),
        (io.StringIO(), {}, False),  # redirected to a file or a pipe
    ],
    ids=["terminal", "NO_COLOR", "dumb-terminal", "redirected"],
)
def test_colour_is_used_on_a_terminal_unless_no_color_says_otherwise(stream, environ, expected):
    assert use_colour(stream, environ) is expected


def test_a_coloured_line_is_plain_text_once_the_escape_codes_are_removed():
    out = _Tty()
    Terminal(out, colour=True).line("completed", "job-1", "F1 0.60", "green")
    text = out.getvalue()
    assert "\033[32m" in text
    plain = text.replace("\033[32m", "").replace("\033[2m", "").replace("\033[0m", "")
    assert plain.split(" ", 1)[1].split() == ["completed", "job-1", "F1", "0.60"]


@pytest.mark.parametrize(
    ("report", "f1"),
    [
        ({"avg": {"f1-score": "0.55"}, "details": []}, "0.55"),
        ({"log": {"avg": {"f1-score": "0.8"}}}, "0.80"),
        ({"weighted avg": {"f1-score": 0.6}, "accuracy": 0.8}, "0.60"),
        ({"yes": {"f1-score": 1.0}}, None),
    ],
    ids=["seed", "seed-under-log", "scikit-learn", "no-summary"],
)
def test_the_end_of_a_job_shows_the_reports_overall_f1(report, f1):
    assert f1_of(report) == f1


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("aifactory", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(fields)
    return record


@pytest.mark.parametrize(
    ("message", "fields", "expected"),
    [
        (
            "dataset staged",
            {"records": 150, "pages": 2, "retries": 0},
            "staged j-1 150 records in 2 pages",
        ),
        ("callback delivered", {"attempt": 3}, "callback j-1 delivered (attempt 3)"),
        (
            "callback failed; will retry",
            {"attempt": 2, "delay": 4},
            "callback j-1 retrying (attempt 2 failed), next in 4 s",
        ),
        (
            "callback failed; will retry",
            {"error": "HTTP 503"},
            "callback j-1 retrying (attempt 1 failed: HTTP 503)",
        ),
        (
            "callback undeliverable",
            {"error": "HTTP 410"},
            "callback j-1 failed: HTTP 410",
        ),
    ],
    ids=["staged", "delivered", "retrying", "retrying-why", "undeliverable"],
)
def test_each_function_event_becomes_one_readable_line(message, fields, expected):
    out = io.StringIO()
    FunctionLogLines(Terminal(out, colour=False)).emit(_record(message, job_name="j-1", **fields))
    (line,) = out.getvalue().splitlines()
    assert " ".join(line.split()[1:]) == expected
