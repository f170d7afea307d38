"""The emulator's core: batch tokens, uploads by URL and by file, details."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from datetime import datetime

import httpx
import jwt
import pytest

from migrator.emulator import Emulator, Settings
from tests.fixtures.emulator import BatchClient, LocalOrigin


def main_get(emulator: Emulator, path: str, token: str) -> httpx.Response:
    url = f"{emulator.main_url}/accounts/{emulator.account_id}/images/{path}"
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"})


def error_code(response: httpx.Response) -> int | str:
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    code: int | str = body["errors"][0]["code"]
    return code


def test_batch_token_is_a_jwt_expiring_when_expires_at_says(emulator: Emulator) -> None:
    response = main_get(emulator, "v1/batch_token", emulator.api_token)

    assert response.status_code == 200
    result = response.json()["result"]
    claims = jwt.decode(result["token"], options={"verify_signature": False})
    assert claims["sub"] == emulator.account_hash
    expires = datetime.fromisoformat(result["expiresAt"][:19] + "+00:00")
    assert claims["exp"] == expires.timestamp()
    assert result["expiresAt"].endswith(".000000000Z")
    assert 3590 < claims["exp"] - time.time() <= 3601


def test_unknown_api_token_is_refused_with_10000(emulator: Emulator) -> None:
    response = main_get(emulator, "v1/batch_token", "not-a-token")

    assert response.status_code == 401
    assert error_code(response) == 10000


def test_another_account_is_refused_with_5403(emulator: Emulator) -> None:
    url = f"{emulator.main_url}/accounts/0000000000000000000000000000beef/images/v2"
    headers = {"Authorization": f"Bearer {emulator.api_token}"}

    response = httpx.get(url, headers=headers)

    assert response.status_code == 403
    assert error_code(response) == 5403


def test_batch_token_is_refused_on_the_main_api(batch: BatchClient) -> None:
    response = main_get(batch.emulator, "v1/stats", batch.token)

    assert response.status_code == 401
    assert error_code(response) == 10000


def test_api_token_is_refused_on_the_batch_host(emulator: Emulator) -> None:
    response = httpx.get(
        f"{emulator.batch_url}/images/v2",
        headers={"Authorization": f"Bearer {emulator.api_token}"},
    )

    assert response.status_code == 401
    assert error_code(response) == 10000


def test_expired_batch_token_is_refused_on_the_batch_host(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(Settings(batch_token_ttl=1))
    token = emulator.batch_token()
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{emulator.batch_url}/images/v2", headers=headers).is_success

    time.sleep(2.05)
    response = httpx.get(f"{emulator.batch_url}/images/v2", headers=headers)

    assert response.status_code == 401
    assert error_code(response) == 10000


def test_upload_by_url_fetches_and_stores_the_image(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    response = batch.upload(
        url=origin.synthetic(640, 480, "jpg", name="cats"),
        id="albums/cats/1.jpg",
        metadata='{"album": "cats"}',
        creator="me",
    )

    assert response.status_code == 200
    result = response.json()["result"]
    assert result["id"] == "albums/cats/1.jpg"
    assert result["filename"] == "640x480.jpg"
    assert result["meta"] == {"album": "cats"}
    assert result["creator"] == "me"
    assert result["requireSignedURLs"] is False
    hash_ = batch.emulator.account_hash
    assert result["variants"] == [
        f"https://imagedelivery.net/{hash_}/albums/cats/1.jpg/public"
    ]
    assert batch.emulator.origin.served[200] >= 1


def test_upload_by_file_reads_the_part(batch: BatchClient, origin: LocalOrigin) -> None:
    data = httpx.get(origin.synthetic(32, 32, "webp")).content

    response = batch.upload(file=("photo.webp", data, "image/webp"))

    assert response.status_code == 200
    result = response.json()["result"]
    assert result["filename"] == "photo.webp"
    assert len(result["id"]) == 36


def test_details_answer_what_the_upload_answered(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    uploaded = batch.upload(url=origin.synthetic(8, 8), id="a b/ü.png").json()

    response = batch.get("/images/v1/a%20b%2F%C3%BC.png")

    assert response.status_code == 200
    assert response.json() == uploaded


def test_details_of_an_unknown_image_is_5404(batch: BatchClient) -> None:
    response = batch.get("/images/v1/nothing-here")

    assert response.status_code == 404
    assert error_code(response) == 5404


def test_uploading_an_existing_id_is_refused_with_5409(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    assert batch.upload(url=origin.synthetic(8, 8), id="same").status_code == 200

    response = batch.upload(url=origin.synthetic(16, 16), id="same")

    assert response.status_code == 409
    assert error_code(response) == 5409
    stats = batch.emulator.stats()
    assert stats["uploads"] == {"attempted": 2, "stored": 1, "duplicates_refused": 1}


@pytest.mark.parametrize(
    ("width", "height", "fmt", "size", "status", "code"),
    [
        (12_001, 1, "png", 0, 400, 5400),
        (10_001, 10_001, "png", 0, 400, 5400),
        (10, 10, "tiff", 0, 415, 5455),
        (10, 10, "bmp", 0, 415, 5455),
        (10, 10, "bin", 0, 415, 5455),
        (10, 10, "jpg", 10 * 1024 * 1024 + 1, 413, 5413),
    ],
    ids=["too-wide", "over-100-megapixels", "tiff", "bmp", "not-an-image", "over-10MB"],
)
def test_upload_refuses_what_cloudflare_refuses(
    batch: BatchClient,
    origin: LocalOrigin,
    width: int,
    height: int,
    fmt: str,
    size: int,
    status: int,
    code: int,
) -> None:
    response = batch.upload(url=origin.synthetic(width, height, fmt, size=size))

    assert response.status_code == status
    assert error_code(response) == code
    assert batch.emulator.stats()["uploads"]["stored"] == 0


@pytest.mark.parametrize(
    ("width", "height", "fmt"),
    [
        (12_000, 8, "png"),
        (10_000, 10_000, "png"),
        (64, 48, "gif"),
        (64, 48, "svg"),
        (4032, 3024, "heic"),
    ],
)
def test_upload_accepts_every_format_within_the_limits(
    batch: BatchClient, origin: LocalOrigin, width: int, height: int, fmt: str
) -> None:
    response = batch.upload(url=origin.synthetic(width, height, fmt))

    assert response.status_code == 200


def test_dead_link_is_refused_with_a_4xx(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    response = batch.upload(url=origin.dead())

    assert response.status_code == 400
    assert error_code(response) == 5400
    assert "404" in response.json()["errors"][0]["message"]


def test_file_part_with_a_non_image_type_is_5455(batch: BatchClient) -> None:
    response = batch.upload(file=("x.png", b"\x89PNG", "application/octet-stream"))

    assert response.status_code == 415
    assert error_code(response) == 5455


def test_non_loopback_origins_are_not_fetched(batch: BatchClient) -> None:
    response = batch.upload(url="http://192.0.2.1/never.jpg")

    assert response.status_code == 400
    assert "only loopback" in response.json()["errors"][0]["message"]


def test_upload_by_url_follows_redirects(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    image = origin.synthetic(4, 4).removeprefix(origin.base_url)
    url = f"{origin.base_url}/redirect/redirect{image}"

    response = batch.upload(url=url)

    assert response.status_code == 200
    assert response.json()["result"]["filename"] == "4x4.png"


def test_too_many_redirects_are_refused(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    image = origin.synthetic(4, 4).removeprefix(origin.base_url)
    url = origin.base_url + "/redirect" * 6 + image

    response = batch.upload(url=url)

    assert response.status_code == 400
    assert "redirects" in response.json()["errors"][0]["message"]


def test_an_origin_slower_than_the_fetch_timeout_is_refused(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(Settings(fetch_timeout=0.3))
    url = f"{emulator.origin_url}/synthetic/slow/4x4.png?delay=1"
    headers = {"Authorization": f"Bearer {emulator.batch_token()}"}

    response = httpx.post(
        f"{emulator.batch_url}/images/v1", headers=headers, files={"url": (None, url)}
    )

    assert response.status_code == 400
    assert "timed out" in response.json()["errors"][0]["message"]


def test_files_below_the_origin_directory_are_served(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    data = httpx.get(origin.synthetic(12, 12, "gif")).content
    (origin.directory / "albums").mkdir()
    (origin.directory / "albums" / "cat.gif").write_bytes(data)

    stored = batch.upload(url=origin.file("albums/cat.gif"))
    escaped = batch.upload(url=origin.file("../../etc/passwd"))

    assert stored.status_code == 200
    assert stored.json()["result"]["filename"] == "cat.gif"
    assert escaped.status_code == 400


def test_concurrent_uploads_of_one_id_store_it_once(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    url = f"{emulator.batch_url}/images/v1"
    headers = {"Authorization": f"Bearer {emulator.batch_token()}"}
    form = {"url": (None, origin.synthetic(16, 16)), "id": (None, "contested")}

    async def race() -> list[int]:
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post(url, files=form) for _ in range(40))
            )
        return [answer.status_code for answer in answers]

    statuses = asyncio.run(race())

    assert sorted(set(statuses)) == [200, 409]
    assert statuses.count(200) == 1
    stats = emulator.stats()
    assert stats["uploads"]["stored"] == 1
    assert stats["uploads"]["duplicates_refused"] == 39


def test_stats_count_requests_by_route_and_status(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    batch.upload(url=origin.synthetic(4, 4), id="x")
    batch.upload(url=origin.synthetic(4, 4), id="x")
    batch.get("/images/v1/x")
    batch.get("/images/v1/y")

    requests = batch.emulator.stats()["requests"]

    assert requests["batch POST /images/v1"] == {"200": 1, "409": 1}
    assert requests["batch GET /images/v1/{image_id}"] == {"200": 1, "404": 1}
    assert requests["main GET /images/v1/batch_token"] == {"200": 1}


@pytest.mark.slow
def test_two_hundred_concurrent_connections_each_get_their_own_image(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    url = f"{emulator.batch_url}/images/v1"
    headers = {"Authorization": f"Bearer {emulator.batch_token()}"}
    # One client per connection (httpx's pool slows down with many at once), all
    # sharing one SSL context, which is slow to make.
    context = ssl.create_default_context()

    async def upload() -> httpx.Response:
        async with httpx.AsyncClient(headers=headers, verify=context, timeout=60) as c:
            return await c.post(url, files={"url": (None, origin.synthetic(8, 8))})

    async def crowd() -> list[httpx.Response]:
        return await asyncio.gather(*(upload() for _ in range(200)))

    answers = asyncio.run(crowd())

    assert [answer.status_code for answer in answers] == [200] * 200
    ids = {answer.json()["result"]["id"] for answer in answers}
    assert len(ids) == 200
    assert emulator.stats()["uploads"]["stored"] == 200


def test_a_client_hanging_up_mid_upload_is_counted_not_an_error(
    batch: BatchClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = httpx.URL(batch.emulator.batch_url)
    head = (
        "POST /images/v1 HTTP/1.1\r\n"
        f"Host: {url.host}\r\n"
        f"Authorization: Bearer {batch.token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 1000\r\n\r\n"
        "--b\r\n"
    )

    # A run killed with kill -9 in the middle of sending an upload.
    with socket.create_connection((url.host, url.port)) as connection:
        connection.sendall(head.encode())

    deadline = time.monotonic() + 5
    while not (counted := batch.emulator.stats()["requests"]).get(
        "batch POST /images/v1"
    ):
        assert time.monotonic() < deadline, "the request was never counted"
        time.sleep(0.05)
    assert counted["batch POST /images/v1"] == {"499": 1}
    assert [record for record in caplog.records if record.levelname == "ERROR"] == []
