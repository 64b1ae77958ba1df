"""Schemathesis against the gateway's own /openapi.json, in front of the four real services.

Every operation of the document is fuzzed with data that fits its schema and with data that does not,
once as an ADMIN and once as a USER; path parameters often name the fuzz world's real book, pool, code or
user, so requests get past "not found". Each answer must be no server error (5xx), carry a status and a
content type the document declares and a body that matches the declared schema, and a request outside the
document must be refused.

The run is bounded: GATEWAY_EXAMPLES per operation, mode and caller (times FUZZ_SCALE), derandomized so a
failure reproduces, no shrinking (a failure is reported as found), no example database.
"""

import asyncio
import collections
import copy

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from kernel.context import ADMIN, USER
from tests.fixtures_fuzz import FUZZ_SCALE, FuzzWorld

GATEWAY_EXAMPLES = 6  # per operation, generation mode and caller
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
REQUEST_TIMEOUT_SECONDS = 30


@pytest.fixture(scope="module")
async def fuzz_gateway_url(start_gateway, fuzz_auth_server, books_server, redemption_server, pools_server):
    return await start_gateway(
        {"auth": fuzz_auth_server, "books": books_server, "redemption": redemption_server, "pools": pools_server}
    )


BUDGET = settings(
    max_examples=GATEWAY_EXAMPLES * FUZZ_SCALE,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)


def _real_path_parameters(operation, world: FuzzWorld) -> dict[str, str]:
    """The world's book, pool, code and user for the operation's path parameters, so a generated request can
    get past "not found"; none for the operations that would take the world away from the others."""
    path = operation.path
    if operation.method.upper() == "DELETE" or path.endswith(":archive"):
        return {}
    by_name = {"code": world.codes[0], "book_id": world.book_id, "pool_id": world.pool_id, "user_id": "me"}
    ids = {"/books/": world.book_id, "/pools/": world.pool_id, "/users/": world.target_user_id}
    id_value = next((value for part, value in ids.items() if part in path), None)
    values = {}
    for parameter in operation.path_parameters:
        value = id_value if parameter.name == "id" else by_name.get(parameter.name)
        if value is not None:
            values[parameter.name] = value
    return values


def _fuzz_operation(operation, mode, world, base_url, session, headers, cases, statuses) -> None:
    strategy = operation.as_strategy(generation_mode=mode)
    real = _real_path_parameters(operation, world)
    if real and mode.is_positive:
        strategy = st.one_of(strategy, operation.as_strategy(generation_mode=mode, path_parameters=real))

    @BUDGET
    @given(case=strategy)
    def run(case):
        cases[operation.label] += 1
        response = case.call(base_url=base_url, session=session, headers=dict(headers), timeout=REQUEST_TIMEOUT_SECONDS)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=dict(headers))

    run()


def _undotted(document: dict) -> dict:
    """The document with `{book.id}` path parameters spelled `{book_id}`: dotted names are valid OpenAPI (RFC 6570
    varnames may hold dots), but schemathesis fills paths with str.format, which reads `book.id` as an attribute.
    Only the name changes; the gateway binds by position in the path."""
    paths = {}
    for path, item in document["paths"].items():
        item = copy.deepcopy(item)
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and "." in parameter["name"]:
                    dotted, parameter["name"] = parameter["name"], parameter["name"].replace(".", "_")
                    path = path.replace("{" + dotted + "}", "{" + parameter["name"] + "}")
        paths[path] = item
    return {**document, "paths": paths}


def _fuzz(base_url: str, headers: dict[str, str], world: FuzzWorld) -> tuple:
    """Every operation's cases, in a worker thread (the servers answer on the test's event loop). Returns the
    operations of the document, the cases run per operation, the answers' statuses, and the failures: one per
    operation and mode, all reported."""
    document = requests.get(f"{base_url}/openapi.json", timeout=REQUEST_TIMEOUT_SECONDS).json()
    schema = schemathesis.openapi.from_dict(_undotted(document))
    cases: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    failures = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            if isinstance(result, Err):  # the document describes an operation schemathesis cannot read
                error = result.err()
                failures.append(f"{error.label}: schemathesis cannot read it: {error.message}")
                continue
            operation = result.ok()
            for mode in MODES:
                try:
                    _fuzz_operation(operation, mode, world, base_url, session, headers, cases, statuses)
                except Unsatisfiable:  # nothing to negate: no parameters, or only path strings
                    continue
                except (Exception, BaseExceptionGroup) as error:  # schemathesis raises a FailureGroup
                    failures.append(f"{operation.label} ({mode.value}): {error}")
    return sum(len(item) for item in document["paths"].values()), cases, statuses, failures


@pytest.mark.parametrize("kind", [ADMIN, USER])
async def test_gateway_answers_every_generated_request_as_its_document_says(
    fuzz_gateway_url, fuzz_callers, fuzz_world, kind
):
    operations, cases, statuses, failures = await asyncio.to_thread(
        _fuzz, fuzz_gateway_url, fuzz_callers[kind].headers, fuzz_world
    )
    print(f"schemathesis as {kind}: {sum(cases.values())} cases over {len(cases)} operations; {dict(statuses)}")
    assert not failures, "\n\n".join(failures)
    assert len(cases) == operations > 40, sorted(cases)
