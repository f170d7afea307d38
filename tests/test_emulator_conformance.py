"""Proof that the emulator answers as Cloudflare does.

The official ``cloudflare`` SDK (a client no one here wrote) drives the main API
and must parse every answer, and every answer body, success or failure, must
validate against Cloudflare's OpenAPI schemas, copied into tests/data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudflare
import httpx
import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from migrator.emulator import Emulator
from tests.fixtures.emulator import BatchClient, LocalOrigin

SCHEMAS = json.loads(
    (Path(__file__).parent / "data" / "cloudflare-images-schemas.json").read_text()
)
_OPERATIONS = [
    ("GET", r".*/images/v1/batch_token", "batch_token"),
    ("GET", r".*/images/v1/stats", "usage_stats"),
    ("GET", r".*/images/v1", "list_v1"),
    ("POST", r".*/images/v1", "upload"),
    ("GET", r".*/images/v2", "list_v2"),
    ("POST", r".*/images/v2/direct_upload", "direct_upload"),
    ("GET", r".*/images/v1/.+", "details"),
    ("PATCH", r".*/images/v1/.+", "update"),
    ("DELETE", r".*/images/v1/.+", "delete"),
    ("POST", r"/upload/.+", "upload_target"),
]


def schema_errors(response: httpx.Response) -> list[str]:
    """Validate an answer against the schema of its operation, or of failures."""
    if response.status_code >= 400:
        name = "failure"
    else:
        path = response.request.url.path
        method = response.request.method
        name = next(
            op
            for m, pattern, op in _OPERATIONS
            if m == method and re.fullmatch(pattern, path)
        )
    schema = {**SCHEMAS["responses"][name], "components": SCHEMAS["components"]}
    validator = OAS30Validator(schema, format_checker=oas30_format_checker)
    body = response.json()
    return [f"{name}: {error.message}" for error in validator.iter_errors(body)]


class Recorder:
    """Keeps every answer an httpx client receives, to validate them all."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, response: httpx.Response) -> None:
        self.responses.append(response)

    def errors(self) -> list[str]:
        found = []
        for response in self.responses:
            response.read()
            found += schema_errors(response)
        return found


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def sdk(emulator: Emulator, recorder: Recorder) -> Iterator[cloudflare.Cloudflare]:
    """The official SDK pointed at the emulator, recording every answer.

    ``max_retries=0``: the SDK would otherwise retry 409s (reference section 7).
    """
    http = httpx.Client(event_hooks={"response": [recorder]})
    client = cloudflare.Cloudflare(
        api_token=emulator.api_token,
        base_url=emulator.main_url,
        max_retries=0,
        http_client=http,
    )
    yield client
    client.close()


def test_the_sdk_uploads_reads_edits_lists_and_deletes(
    sdk: cloudflare.Cloudflare,
    emulator: Emulator,
    origin: LocalOrigin,
    recorder: Recorder,
) -> None:
    account = emulator.account_id
    by_url = sdk.images.v1.create(
        account_id=account,
        url=origin.synthetic(300, 200, "jpg"),
        id="sdk/by-url.jpg",
        metadata=json.dumps({"source": "sdk"}),
        creator="tester",
    )
    data = httpx.get(origin.synthetic(50, 50, "png")).content
    by_file = sdk.images.v1.create(
        account_id=account,
        file=("logo.png", data, "image/png"),
        require_signed_urls=True,
    )
    fetched = sdk.images.v1.get("sdk/by-url.jpg", account_id=account)
    edited = sdk.images.v1.edit(
        by_file.id or "", account_id=account, metadata={"edited": True}
    )
    listed = sdk.images.v2.list(account_id=account, per_page=10, sort_order="asc")
    filtered = sdk.images.v2.list(
        account_id=account, extra_query={"meta.source[eq]": "sdk"}
    )
    deleted = sdk.images.v1.delete("sdk/by-url.jpg", account_id=account)

    assert by_url.id == "sdk/by-url.jpg"
    assert by_url.meta == {"source": "sdk"}
    assert by_url.creator == "tester"
    assert by_url.uploaded is not None
    assert by_file.require_signed_urls is True
    assert by_file.filename == "logo.png"
    assert fetched.variants == by_url.variants
    assert edited.meta == {"edited": True}
    assert [image.id for image in listed.images or []] == [by_url.id, by_file.id]
    assert listed.continuation_token is None
    assert [image.id for image in filtered.images or []] == [by_url.id]
    assert deleted == {} or not deleted
    assert recorder.errors() == []


def test_the_sdk_creates_a_direct_upload(
    sdk: cloudflare.Cloudflare, emulator: Emulator, recorder: Recorder
) -> None:
    created = sdk.images.v2.direct_uploads.create(
        account_id=emulator.account_id, metadata=json.dumps({"via": "direct"})
    )
    draft = sdk.images.v1.get(created.id or "", account_id=emulator.account_id)

    assert created.upload_url is not None
    assert created.upload_url.startswith(emulator.base_url)
    assert draft.meta == {"via": "direct"}
    assert recorder.errors() == []


def test_the_sdk_reads_failures_as_its_own_errors(
    sdk: cloudflare.Cloudflare,
    emulator: Emulator,
    origin: LocalOrigin,
    recorder: Recorder,
) -> None:
    account = emulator.account_id
    url = origin.synthetic(10, 10)
    sdk.images.v1.create(account_id=account, url=url, id="taken")

    with pytest.raises(cloudflare.ConflictError) as duplicate:
        sdk.images.v1.create(account_id=account, url=url, id="taken")
    with pytest.raises(cloudflare.NotFoundError) as missing:
        sdk.images.v1.get("absent", account_id=account)
    with pytest.raises(cloudflare.BadRequestError) as dead:
        sdk.images.v1.create(account_id=account, url=origin.dead())
    stranger = cloudflare.Cloudflare(
        api_token="wrong", base_url=emulator.main_url, max_retries=0
    )
    with pytest.raises(cloudflare.AuthenticationError) as refused:
        stranger.images.v1.get("taken", account_id=account)

    assert _code(duplicate.value) == 5409
    assert _code(missing.value) == 5404
    assert _code(dead.value) == 5400
    assert _code(refused.value) == 10000
    assert recorder.errors() == []


def _code(error: cloudflare.APIStatusError) -> Any:
    assert isinstance(error.body, dict)
    return error.body["errors"][0]["code"]


def test_every_answer_of_both_hosts_validates_against_the_schemas(
    emulator: Emulator, batch: BatchClient, origin: LocalOrigin, recorder: Recorder
) -> None:
    """Drive every route, successes and failures, on the batch and main hosts."""
    batch.http.event_hooks["response"] = [recorder]
    main = httpx.Client(
        base_url=f"{emulator.main_url}/accounts/{emulator.account_id}",
        headers={"Authorization": f"Bearer {emulator.api_token}"},
        event_hooks={"response": [recorder]},
    )
    target = httpx.Client(event_hooks={"response": [recorder]})
    png = httpx.get(origin.synthetic(8, 8)).content

    for client in (batch.http, main):
        for url in (
            origin.synthetic(8, 8),
            origin.dead(),
            origin.synthetic(9, 9, "tiff"),
            origin.synthetic(1, 1, size=11_000_000),
        ):
            client.post("/images/v1", files={"url": (None, url)})
        for image_id in ("s/0", "s/1", "s/0"):
            client.post(
                "/images/v1",
                files={"url": (None, origin.synthetic(8, 8)), "id": (None, image_id)},
            )
        client.get("/images/v1/s%2F1")
        client.get("/images/v1/absent")
        client.patch("/images/v1/s%2F1", json={"metadata": {"a": 1}, "creator": "c"})
        client.patch("/images/v1/s%2F1", json={"requireSignedURLs": True})
        client.get("/images/v2", params={"per_page": 10, "sort_order": "asc"})
        client.get("/images/v2", params={"continuation_token": "bad"})
        client.post("/images/v2/direct_upload", files={"id": (None, "s/1")})
        for name in ("good", "bad"):
            created = client.post(
                "/images/v2/direct_upload", files={"id": (None, name)}
            )
            data = png if name == "good" else b"not an image"
            target.post(
                created.json()["result"]["uploadURL"],
                files={"file": ("x.png", data, "image/png")},
            )
        client.delete("/images/v1/s%2F1")
        client.delete("/images/v1/s%2F1")
        emulator.reset()
    main.get("/images/v1/batch_token")
    main.get("/images/v1/stats")
    main.get("/images/v1", params={"per_page": 10})
    main.close()
    target.close()

    statuses = {response.status_code for response in recorder.responses}
    assert statuses == {200, 400, 404, 409, 413, 415}
    assert recorder.errors() == []


def test_refusals_from_limits_faults_and_auth_validate_too(
    emulator: Emulator, batch: BatchClient, recorder: Recorder
) -> None:
    batch.http.event_hooks["response"] = [recorder]
    for faults in ({"error_rate": 1, "seed": 5}, {"throttle_rate": 1}):
        emulator.set_faults(**faults)
        for _ in range(4):
            batch.get("/images/v2")
    emulator.set_faults(expire_rate=1)
    batch.get("/images/v2")
    batch.get("/images/v3")

    statuses = {response.status_code for response in recorder.responses}
    assert statuses == {401, 404, 429, 500, 503}
    assert recorder.errors() == []
