"""The OpenAPI document: served, valid OpenAPI 3, and it declares every route with its errors."""
import pytest
from openapi_spec_validator import validate

from tests.api.openapi import openapi_document

pytestmark = pytest.mark.django_db


def test_the_served_document_is_valid_openapi(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document == openapi_document()


def test_every_route_declares_the_bearer_key_and_the_error_answers():
    document = openapi_document()
    schemes = document["components"]["securitySchemes"]
    assert [scheme["type"] for scheme in schemes.values()] == ["http"]
    assert [scheme["scheme"] for scheme in schemes.values()] == ["bearer"]
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert operations
    for operation in operations:
        assert operation["security"], operation["operationId"]
        assert {"401", "403", "429", "500"} <= set(operation["responses"]), operation["operationId"]
        assert "Scope: " in operation["description"], operation["operationId"]


def test_the_docs_page_loads_its_scripts_from_this_server(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page
    assert "http://" not in page and "https://" not in page
    assert '"url": "/api/v1/openapi.json"' in page
