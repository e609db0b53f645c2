"""A bounded property-based run of the HTTP API from its own OpenAPI schema (schemathesis):
whatever the generated parameters, uploads and ids, no 500, and every response matches the
schema's status codes, content types and shapes.  Derandomised and capped in examples, so it
is repeatable and takes seconds.

Left out: schemathesis's "schema-valid data must be accepted" check.  Whether an upload is an
image, or a code fits the index's bit width, is known only at run time (a 422 with its cause),
not something an OpenAPI schema can state."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with or without tests/__init__.py

from index_fixtures import add_model, write_digit_folder  # noqa: E402

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from semhash.index import index_folder  # noqa: E402
from semhash.index.browse import UploadLimits  # noqa: E402
from semhash.web.app import create_app  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    add_model(root / "ws", "m1", seed=0, n_bits=16)
    write_digit_folder(root / "imgs", per_class=4, classes=(0, 1, 2))
    workspace = Workspace(root / "ws")
    index_folder(root / "imgs", workspace.model("m1"), workspace.index_path, progress=False)
    limits = UploadLimits(max_request_bytes=100_000, max_files=4, max_pixels=100_000)
    app = create_app(workspace.index_path, workspace, limits=limits, allowed_hosts=("127.0.0.1", "testserver"),
                     review=True)  # the decision routes too, past their 403
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_500(case):
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
