"""Request bodies: JSON whatever the Content-Type, form bodies too, clear errors otherwise."""

import base64
import json

import pytest

from aifactory.api import parse_body
from aifactory.errors import BadRequest


def event(body, content_type="application/json", encoded=False):
    return {"body": body, "isBase64Encoded": encoded, "headers": {"content-type": content_type}}


def test_json_under_any_content_type():
    assert parse_body(event('{"a": 1}', "text/plain")) == {"a": 1}


def test_urlencoded_form_with_nested_json():
    body = "job_name=abc&callback_url=%7B%22url%22%3A%22https%3A%2F%2Fx%22%7D"
    assert parse_body(event(body, "application/x-www-form-urlencoded")) == {
        "job_name": "abc",
        "callback_url": {"url": "https://x"},
    }


def test_multipart_form():
    body = (
        '--b\r\nContent-Disposition: form-data; name="job_name"\r\n\r\nabc\r\n'
        '--b\r\nContent-Disposition: form-data; name="obj"\r\n\r\n{"k": 1}\r\n--b--\r\n'
    )
    assert parse_body(event(body, "multipart/form-data; boundary=b")) == {
        "job_name": "abc",
        "obj": {"k": 1},
    }


def test_base64_bodies():
    raw = base64.b64encode(json.dumps({"a": 1}).encode()).decode()
    assert parse_body(event(raw, encoded=True)) == {"a": 1}
    with pytest.raises(BadRequest, match="body: is not valid base64"):
        parse_body(event("%%%", encoded=True))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[1]", "body: must be a JSON object"),
        ("{", "body: is not valid JSON"),
        ("x" * 300_000, "body: must be at most 262144 bytes"),
    ],
)
def test_unreadable_bodies(body, message):
    with pytest.raises(BadRequest) as raised:
        parse_body(event(body))
    assert raised.value.message == message


def test_empty_body_is_an_empty_object():
    assert parse_body(event(None)) == {}
