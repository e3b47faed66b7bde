"""openapi.yaml: generated from the models, valid OpenAPI 3.1, served by the local Factory."""

import json

import requests
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from aifactory_local.factory import LocalFactory
from aifactory_local.openapi import OPENAPI_PATH, build_spec, local_spec, render
from tests.template.cfn import load_sam_template


def test_the_committed_openapi_yaml_is_what_the_models_generate() -> None:
    # A model changed without regenerating the document fails here.
    assert OPENAPI_PATH.read_text(encoding="utf-8") == render(), (
        "openapi.yaml is stale: run .venv/bin/python -m aifactory_local.openapi --write"
    )


def test_openapi_yaml_is_valid_openapi_3_1() -> None:
    document, _ = read_from_filename(str(OPENAPI_PATH))
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_the_document_covers_every_route_of_the_template_and_the_callback() -> None:
    # Given the routes the stack serves
    routes = {
        str(event["Properties"]["Path"])
        for resource in load_sam_template()["Resources"].values()
        for event in resource.get("Properties", {}).get("Events", {}).values()
        if event.get("Type") == "Api"
    }
    spec = build_spec()
    # Then the document describes each one (and nothing the stack does not serve)
    assert set(spec["paths"]) == routes
    assert "/openapi.json" not in routes and "/docs" not in routes
    # and the key, the idempotency key, the page token and the signed callback
    assert spec["components"]["securitySchemes"]["api_key"]["name"] == "x-api-key"
    create = spec["paths"]["/create_training_job"]["post"]
    assert set(create["responses"]) == {"200", "400", "403", "409", "429", "500"}
    listing = spec["paths"]["/check_trained_job"]["post"]["responses"]["200"]
    assert "X-Next-Token" in listing["headers"]
    webhook = spec["webhooks"]["trainingJobEnded"]["post"]
    assert {p["name"] for p in webhook["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }


def test_the_local_factory_serves_the_document_and_swagger_ui_without_a_key(
    factory: LocalFactory,
) -> None:
    # When anyone, with no key, asks the local Factory for its description
    document = requests.get(f"{factory.api_url}/openapi.json", timeout=30)
    docs = requests.get(f"{factory.api_url}/docs", timeout=30)
    # Then it gets the OpenAPI document, listing this Factory first among the servers
    assert document.status_code == 200
    assert document.json() == local_spec(factory.api_url)
    assert document.json()["servers"][0]["url"] == factory.api_url
    # and a Swagger UI page over the same document
    assert docs.status_code == 200
    assert docs.headers["Content-Type"].startswith("text/html")
    assert "SwaggerUIBundle" in docs.text
    assert json.dumps(local_spec(factory.api_url)) in docs.text
    # while the API routes still need a key
    assert requests.post(f"{factory.api_url}/check_trained_job", timeout=30).status_code == 403
