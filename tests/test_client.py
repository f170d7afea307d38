"""The HTTP boundary against the emulator: operations, error kinds, tokens, leaks."""

from __future__ import annotations

import io
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from migrator.client import (
    FilePart,
    ImageFields,
    ImagesClient,
    classify,
    parse_timestamp,
    shown_source,
    sniff_content_type,
)
from migrator.emulator import Emulator, Settings
from migrator.emulator.origin import make_image
from migrator.errors import (
    AccountStoppedError,
    AlreadyExistsError,
    AuthError,
    ForbiddenEndpointError,
    NotFoundError,
    PermanentApiError,
    RateLimitedError,
    TransientApiError,
    TransportError,
)
from tests.fixtures.emulator import LocalOrigin
from tests.fixtures.runner import client_config, client_for


def envelope(code: Any) -> dict[str, Any]:
    return {
        "success": False,
        "result": None,
        "errors": [{"code": code, "message": "m"}],
    }


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (415, 5455, PermanentApiError),
        (413, 5413, PermanentApiError),
        (409, 5409, AlreadyExistsError),
        (404, 5404, NotFoundError),
        (403, 5403, AccountStoppedError),
        (403, 5453, AccountStoppedError),
        (401, 10000, AuthError),
        (400, 10000, AuthError),
        (500, 5500, TransientApiError),
        (400, 5408, TransientApiError),
        (502, 5543, TransientApiError),
        (403, "103", ForbiddenEndpointError),
        (429, 971, RateLimitedError),
        (503, 9999, TransientApiError),
        (400, 9999, PermanentApiError),
    ],
)
def test_failures_are_classified_by_code_then_status(
    status: int, code: Any, kind: type[Exception]
) -> None:
    error = classify(status, envelope(code), "upload")

    assert type(error) is kind
    assert error.code == str(code)
    assert error.http_status == status


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (502, TransientApiError),
        (429, RateLimitedError),
        (401, AuthError),
        (404, PermanentApiError),
        (200, TransientApiError),
    ],
)
def test_answers_without_an_envelope_are_classified_by_status(
    status: int, kind: type[Exception]
) -> None:
    assert type(classify(status, None, "upload")) is kind


def test_timestamps_with_nanoseconds_are_read_as_utc() -> None:
    parsed = parse_timestamp("2023-08-09T15:33:56.273411222Z")

    assert parsed is not None
    assert parsed.isoformat() == "2023-08-09T15:33:56.273411+00:00"
    assert parse_timestamp("yesterday") is None


def test_content_type_comes_from_the_bytes_not_the_name() -> None:
    assert sniff_content_type(make_image(2, 2, "png"), "photo.jpg") == "image/png"
    assert sniff_content_type(make_image(2, 2, "jpg")) == "image/jpeg"
    assert sniff_content_type(make_image(2, 2, "webp")) == "image/webp"
    assert sniff_content_type(b"<svg xmlns='http://www.w3.org/2000/svg'/>") == (
        "image/svg+xml"
    )
    assert sniff_content_type(b"plain", "notes.unknownext") == (
        "application/octet-stream"
    )


def test_upload_by_url_then_details_update_and_find(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        fields = ImageFields(metadata={"migrator_key": "k1", "album": "a"})
        uploaded = client.upload_url(origin.synthetic(20, 10), fields)
        details = client.details(uploaded.id)
        updated = client.update(uploaded.id, ImageFields(metadata={"album": "b"}))
        found = client.find("migrator_key", "k1")

    assert details.id == uploaded.id
    assert uploaded.variants
    assert uploaded.uploaded_at is not None
    assert updated.meta == {"album": "b"}
    assert found == []


def test_upload_of_a_local_file_streams_it_with_its_type(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "photo"
    path.write_bytes(make_image(30, 20, "webp"))
    part = FilePart.open(str(path))

    with client_for(emulator) as client, part.stream:
        record = client.upload_file(part, ImageFields(custom_id="dir/photo one"))
        again = client.details("dir/photo one")

    assert part.content_type == "image/webp"
    assert record.id == again.id == "dir/photo one"


def test_uploading_an_existing_custom_id_raises_already_exists(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    fields = ImageFields(custom_id="same")
    with client_for(emulator) as client:
        client.upload_url(origin.synthetic(5, 5), fields)
        with pytest.raises(AlreadyExistsError):
            client.upload_url(origin.synthetic(5, 5), fields)
        with pytest.raises(NotFoundError):
            client.details("other")


def test_listing_falls_back_to_the_main_api_when_the_batch_host_refuses(
    make_emulator: Any, tmp_path: Path
) -> None:
    emulator = make_emulator(Settings(batch_list_forbidden=True))
    with client_for(emulator) as client:
        record = client.upload_file(
            FilePart(io.BytesIO(make_image(4, 4, "png")), "a.png", "image/png"),
            ImageFields(metadata={"migrator_key": "abc"}),
        )
        first = client.find("migrator_key", "abc")
        second = client.find("migrator_key", "abc")

    assert [image.id for image in first] == [record.id]
    assert second == first
    routes = emulator.stats()["requests"]
    assert any("main GET /images/v2" in route for route in routes)


def test_a_refused_batch_token_is_replaced_once_and_the_request_repeated(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        client.upload_url(origin.synthetic(5, 5), ImageFields())
        emulator.set_faults(expire_rate=1.0)
        with pytest.raises(AuthError):
            client.upload_url(origin.synthetic(5, 5), ImageFields())
        refused_once = client.tokens.fetches
        emulator.set_faults()
        client.upload_url(origin.synthetic(5, 5), ImageFields())

    # The refused request went out twice, with two tokens; the emulator keeps
    # refusing a token it expired early, so the next upload needed a third.
    assert refused_once == 2
    assert client.tokens.fetches == 3


def test_a_429_is_waited_out_and_sent_again(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        client.tokens.get(0)
        emulator.set_faults(throttle_rate=0.4, seed=5)
        for _ in range(3):
            client.upload_url(origin.synthetic(5, 5), ImageFields())

    assert client.throttled > 0
    assert client.limiter.throttled == client.throttled
    assert emulator.stats()["uploads"]["stored"] == 3


def test_a_bad_api_token_is_an_auth_error(emulator: Emulator) -> None:
    config = client_config(emulator)
    config = type(config)(
        **{**config.__dict__, "api_token": type(config.api_token)("x")}
    )
    with ImagesClient(config) as client, pytest.raises(AuthError):
        client.details("anything")


def test_a_dropped_answer_may_have_reached_cloudflare(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        client.tokens.get(0)
        emulator.set_faults(drop_rate=1.0)
        with pytest.raises(TransportError) as caught:
            client.upload_url(origin.synthetic(5, 5), ImageFields())

    assert caught.value.may_have_reached
    assert emulator.stats()["uploads"]["stored"] == 1


def test_a_refused_connection_certainly_did_not_reach_cloudflare(
    emulator: Emulator,
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    config = client_config(emulator)
    config = type(config)(**{**config.__dict__, "api_url": f"http://127.0.0.1:{port}"})

    with ImagesClient(config) as client, pytest.raises(TransportError) as caught:
        client.details("x")

    assert not caught.value.may_have_reached


def test_a_full_account_is_an_account_stopped_error(
    make_emulator: Any, tmp_path: Path
) -> None:
    emulator = make_emulator(Settings(quota=0))
    part = FilePart(io.BytesIO(make_image(4, 4, "png")), "a.png", "image/png")

    with client_for(emulator) as client, pytest.raises(AccountStoppedError) as caught:
        client.upload_file(part, ImageFields())

    assert caught.value.code == "5453"


def test_no_token_appears_in_logs_reprs_or_errors(
    emulator: Emulator, origin: LocalOrigin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    with client_for(emulator) as client:
        client.upload_url(origin.synthetic(5, 5), ImageFields(custom_id="x"))
        batch_token = client.tokens.get(0).secret.reveal()
        emulator.set_faults(expire_rate=1.0)
        for call in (
            lambda: client.upload_url(origin.synthetic(5, 5), ImageFields()),
            lambda: client.details("missing"),
        ):
            try:
                call()
            except Exception as error:
                shown += [str(error), repr(error), repr(error.__cause__)]
        shown += [repr(client), repr(client.config), repr(client.tokens.get(0))]

    everything = caplog.text + "\n".join(shown)
    assert batch_token not in everything
    assert emulator.api_token not in everything


def test_origin_credentials_are_hidden_where_a_source_is_shown() -> None:
    assert shown_source("https://ann:s3cret@photos.example/a.jpg?x=1") == (
        "https://***@photos.example/a.jpg?x=1"
    )
    assert (
        shown_source("https://photos.example/a.jpg") == "https://photos.example/a.jpg"
    )
    assert shown_source("/srv/photos/a.jpg") == "/srv/photos/a.jpg"


@pytest.mark.parametrize(
    ("name", "size"), [('odd "name".png', 0), ("large.png", 600 * 1024)]
)
def test_small_files_go_in_one_body_and_large_ones_are_streamed(
    emulator: Emulator, tmp_path: Path, name: str, size: int
) -> None:
    path = tmp_path / name
    path.write_bytes(make_image(40, 30, "png", size=size))
    part = FilePart.open(str(path))

    with client_for(emulator) as client, part.stream:
        record = client.upload_file(part, ImageFields(custom_id=name))

    assert record.id == name
    assert emulator.stats()["uploads"]["stored"] == 1
