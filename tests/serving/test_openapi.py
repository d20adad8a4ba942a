"""Property tests of the serving API from its own OpenAPI spec (schemathesis): for
generated requests, valid and invalid, no endpoint answers a server error, every status
is a documented one, and every answer matches its documented schema."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.served import ServedShop
from tests.serving.test_api import Api

pytestmark = pytest.mark.slow
# No server error, only documented status codes, every body as documented. Not checked:
# that every schema-valid request is accepted — some rules span parameters (price_min <=
# price_max; a click names its answer) and are 422 by design.
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(served_shop: ServedShop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    a = Api(served_shop, tmp_path_factory.mktemp("openapi"))
    yield a
    a.close()


@pytest.fixture(scope="module")
def spec(api: Api) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api.app)


def test_no_request_makes_a_server_error(spec: Any, api: Api) -> None:
    tried = 0
    for result, mode in itertools.product(
        list(spec.get_all_operations()), (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ):
        operation = result.ok()

        # the admin key: every operation is reachable (401/403 are tested on their own)
        @given(operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": api.admin_key}, checks=CHECKS)

        try:
            call()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            continue  # an operation without parameters or body: nothing invalid to send
        tried += 1
    assert tried >= 14  # every operation valid, and invalid where it takes input


def test_the_spec_documents_every_endpoint(spec: Any) -> None:
    paths = set(spec.raw_schema["paths"])
    assert {
        "/v1/recommendations/{user_id}", "/v1/recommendations", "/v1/search",
        "/v1/items/{item_id}/similar", "/v1/events", "/v1/models", "/healthz", "/readyz",
        "/admin/reload",
    } <= paths  # fmt: skip
    assert Path("/preview").name not in paths  # the HTML page is not part of the API
