"""GET /console and GET /console/{asset}: the job console (a static page; no data, no key)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory import console
from aifactory.log import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# The page and its assets ship in this function's folder, and in no other function's.
STATIC = Path(__file__).with_name("static")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return console.respond(event, STATIC)
