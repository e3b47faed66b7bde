"""The seed's example create_training_job request, in one file.

`events/requests/create_training_job.json` is the seed's request aimed at the sample servers
of this machine (a dataset endpoint on 127.0.0.1:8900 and a callback receiver on :8901), so
`aifactory create events/requests/create_training_job.json` sends it as it is. The demo, the
banner's curl, the chaos run and the tests send the same request at their own servers.
"""

import json
from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).resolve().parents[2] / "events" / "requests" / "create_training_job.json"


def example_request(
    dataset_url: str | None = None, callback_url: str | None = None
) -> dict[str, Any]:
    """The sample request, pointed at the given URLs (the sample's own where none is given)."""
    body: dict[str, Any] = json.loads(SAMPLE.read_text())
    if dataset_url is not None:
        body["dataset_endpoint"]["url"] = dataset_url
    if callback_url is not None:
        body["callback_url"]["url"] = callback_url
    return body


def seed_hyperparameters() -> dict[str, str]:
    """The seed's hyperparameters, as SageMaker passes them."""
    return dict(example_request()["training_model"]["hyperparameters"])
