"""The emulator's other operations: list v2, update, delete, direct upload, state."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from migrator.emulator import Emulator, Settings
from tests.fixtures.emulator import BatchClient, LocalOrigin


def upload_many(batch: BatchClient, origin: LocalOrigin, count: int) -> list[str]:
    ids = []
    for index in range(count):
        response = batch.upload(
            url=origin.synthetic(4, 4, name=str(index)),
            id=f"img/{index:03}",
            metadata=json.dumps({"n": index, "parity": ["even", "odd"][index % 2]}),
            creator="alice" if index < 5 else "bob",
        )
        assert response.status_code == 200, response.text
        ids.append(response.json()["result"]["id"])
    return ids


def list_all(batch: BatchClient, **params: object) -> list[str]:
    """Follow continuation tokens to the end, returning every listed ID."""
    found: list[str] = []
    token = None
    while True:
        query = dict(params, **({"continuation_token": token} if token else {}))
        result = batch.get("/images/v2", **query).json()["result"]
        found += [image["id"] for image in result["images"]]
        token = result["continuation_token"]
        if token is None:
            return found


def test_list_v2_pages_newest_first_until_the_token_is_null(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    ids = upload_many(batch, origin, 25)

    first = batch.get("/images/v2", per_page=10).json()["result"]

    assert [image["id"] for image in first["images"]] == ids[::-1][:10]
    assert isinstance(first["continuation_token"], str)
    assert len(first["continuation_token"]) <= 32
    assert list_all(batch, per_page=10) == ids[::-1]
    assert list_all(batch, per_page=10, sort_order="asc") == ids


def test_list_v2_filters_by_creator_and_metadata(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    upload_many(batch, origin, 10)

    assert len(list_all(batch, creator="alice")) == 5
    assert list_all(batch, **{"meta.n[eq]": "7"}) == ["img/007"]
    assert list_all(batch, **{"meta.n[in]": "1|2|3", "sort_order": "asc"}) == [
        "img/001",
        "img/002",
        "img/003",
    ]
    assert len(list_all(batch, **{"meta.parity[eq]": "odd"})) == 5
    assert len(list_all(batch, **{"meta.n[gte]": "8"})) == 2
    assert list_all(batch, **{"meta.n[lt]": "1", "creator": "alice"}) == ["img/000"]
    assert list_all(batch, **{"meta.missing[eq]": "x"}) == []
    assert list_all(batch, **{"meta.n[eq:number]": "7.0"}) == ["img/007"]
    assert list_all(batch, **{"meta.n[eq:string]": "7"}) == []
    assert len(list_all(batch, **{"meta.parity[in:string]": "odd|even"})) == 10


def test_list_v2_finds_an_upload_by_its_migration_key(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    key = "0123456789abcdef0123456789abcdef"
    uploaded = batch.upload(
        url=origin.synthetic(4, 4), metadata=json.dumps({"migrator_key": key})
    ).json()["result"]
    batch.upload(url=origin.synthetic(4, 4), metadata='{"migrator_key": "other"}')

    found = batch.get("/images/v2", **{"meta.migrator_key[eq]": key}).json()

    assert [image["id"] for image in found["result"]["images"]] == [uploaded["id"]]


@pytest.mark.parametrize(
    "query",
    [
        {"per_page": "5"},
        {"sort_order": "sideways"},
        {"continuation_token": "not-a-token"},
        {"meta.a[like]": "x"},
        {"meta.a[gt:string]": "x"},
        {f"meta.f{index}[eq]": "x" for index in range(6)},
    ],
    ids=[
        "per-page-too-small",
        "bad-order",
        "bad-token",
        "bad-operator",
        "string-comparison",
        "6-filters",
    ],
)
def test_list_v2_refuses_a_bad_query_with_5400(
    batch: BatchClient, query: dict[str, str]
) -> None:
    response = batch.get("/images/v2", **query)

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == 5400


def test_update_changes_only_the_fields_sent(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    image = batch.upload(
        url=origin.synthetic(4, 4), metadata='{"a": 1}', creator="me"
    ).json()["result"]

    response = batch.http.patch(
        f"/images/v1/{image['id']}", json={"requireSignedURLs": True}
    )
    again = batch.http.patch(f"/images/v1/{image['id']}", json={"metadata": {"b": 2}})

    assert response.json()["result"]["requireSignedURLs"] is True
    assert response.json()["result"]["meta"] == {"a": 1}
    assert again.json()["result"]["meta"] == {"b": 2}
    assert again.json()["result"]["creator"] == "me"
    assert again.json()["result"]["requireSignedURLs"] is True


def test_update_refuses_signed_urls_on_a_custom_id(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    batch.upload(url=origin.synthetic(4, 4), id="mine")

    response = batch.http.patch("/images/v1/mine", json={"requireSignedURLs": True})

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == 5400


def test_delete_answers_an_empty_result_then_5404(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    batch.upload(url=origin.synthetic(4, 4), id="doomed")

    first = batch.http.delete("/images/v1/doomed")
    second = batch.http.delete("/images/v1/doomed")

    assert first.status_code == 200
    assert first.json()["result"] == {}
    assert second.status_code == 404
    assert batch.get("/images/v1/doomed").status_code == 404


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "/leading-slash"},
        {"id": "trailing/"},
        {"id": "9f1a2b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c"},
        {"id": "x" * 1025},
        {"id": "signed", "requireSignedURLs": "true"},
        {"metadata": json.dumps({"k": "v" * 1100})},
        {"metadata": "[1, 2]"},
        {"metadata": "{not json"},
        {"requireSignedURLs": "maybe"},
        {"creator": "c" * 1025},
    ],
    ids=[
        "leading-slash",
        "trailing-slash",
        "uuid",
        "too-long",
        "custom-id-signed",
        "metadata-too-big",
        "metadata-not-object",
        "metadata-not-json",
        "bad-boolean",
        "creator-too-long",
    ],
)
def test_upload_refuses_what_the_rules_refuse_with_5400(
    batch: BatchClient, origin: LocalOrigin, fields: dict[str, str]
) -> None:
    response = batch.upload(url=origin.synthetic(4, 4), **fields)

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == 5400


def test_upload_needs_exactly_one_of_file_and_url(batch: BatchClient) -> None:
    assert batch.upload(id="nothing").status_code == 400
    response = batch.http.post("/images/v1", content=b"raw bytes")
    assert response.status_code == 415
    assert response.json()["errors"][0]["code"] == 5415


def test_a_malformed_multipart_body_is_5400(batch: BatchClient) -> None:
    response = batch.http.post(
        "/images/v1",
        content=b"--x\r\nno headers here",
        headers={"Content-Type": "multipart/form-data"},
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == 5400


def test_direct_upload_makes_a_draft_that_its_file_completes(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    created = batch.http.post(
        "/images/v2/direct_upload",
        files={"id": (None, "direct/1"), "metadata": (None, '{"via": "direct"}')},
    ).json()["result"]
    draft = batch.get("/images/v1/direct%2F1").json()["result"]
    listed_before = list_all(batch)

    data = httpx.get(origin.synthetic(20, 10, "gif")).content
    sent = httpx.post(
        created["uploadURL"], files={"file": ("anim.gif", data, "image/gif")}
    )
    after = batch.get("/images/v1/direct%2F1").json()["result"]
    again = httpx.post(
        created["uploadURL"], files={"file": ("a.gif", data, "image/gif")}
    )

    assert created["id"] == "direct/1"
    assert created["uploadURL"].endswith(f"/{batch.emulator.account_hash}/direct%2F1")
    assert draft["draft"] is True
    assert listed_before == []
    assert sent.status_code == 200
    assert "draft" not in after
    assert after["filename"] == "anim.gif"
    assert after["meta"] == {"via": "direct"}
    assert list_all(batch) == ["direct/1"]
    assert again.status_code == 409


def test_direct_upload_refuses_an_expiry_out_of_range(batch: BatchClient) -> None:
    response = batch.http.post(
        "/images/v2/direct_upload", files={"expiry": (None, "2001-01-01T00:00:00Z")}
    )

    assert response.status_code == 400


def test_stats_count_images_against_the_quota(
    emulator: Emulator, batch: BatchClient, origin: LocalOrigin
) -> None:
    upload_many(batch, origin, 3)
    url = f"{emulator.main_url}/accounts/{emulator.account_id}/images/v1/stats"

    response = httpx.get(url, headers={"Authorization": f"Bearer {emulator.api_token}"})

    assert response.json()["result"]["count"]["current"] == 3


def test_uploads_past_the_quota_are_refused_with_5453(
    make_emulator: Callable[..., Emulator], origin: LocalOrigin
) -> None:
    emulator = make_emulator(Settings(quota=1))
    headers = {"Authorization": f"Bearer {emulator.batch_token()}"}
    url = {"url": (None, origin.synthetic(4, 4))}

    first = httpx.post(f"{emulator.batch_url}/images/v1", headers=headers, files=url)
    second = httpx.post(f"{emulator.batch_url}/images/v1", headers=headers, files=url)

    assert first.status_code == 200
    assert second.json()["errors"][0]["code"] == 5453


def test_data_file_keeps_images_and_tokens_across_a_restart(
    make_emulator: Callable[..., Emulator], origin: LocalOrigin, tmp_path: Path
) -> None:
    data = tmp_path / "emulator.db"
    first = make_emulator(data=data)
    token = first.batch_token()
    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(
        f"{first.batch_url}/images/v1",
        headers=headers,
        files={"url": (None, origin.synthetic(4, 4)), "id": (None, "kept")},
    )
    first.stop()

    second = make_emulator(data=data)
    response = httpx.get(f"{second.batch_url}/images/v1/kept", headers=headers)

    assert response.status_code == 200
    assert response.json()["result"]["id"] == "kept"


def test_reset_forgets_images_and_counters(
    emulator: Emulator, batch: BatchClient, origin: LocalOrigin
) -> None:
    upload_many(batch, origin, 2)

    emulator.reset()

    assert emulator.stats()["images"] == 0
    assert emulator.stats()["requests_total"] == 0
    assert batch.get("/images/v1/img%2F000").status_code == 404


def test_unknown_routes_answer_7003(batch: BatchClient) -> None:
    response = batch.get("/images/v3/whatever")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == 7003


def test_batch_listing_can_be_forbidden_as_one_report_saw(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(Settings(batch_list_forbidden=True))
    headers = {"Authorization": f"Bearer {emulator.batch_token()}"}

    response = httpx.get(f"{emulator.batch_url}/images/v2", headers=headers)

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "103"


def test_batch_api_can_have_its_own_port(
    make_emulator: Callable[..., Emulator],
) -> None:
    emulator = make_emulator(batch_port=0)
    headers = {"Authorization": f"Bearer {emulator.batch_token()}"}

    response = httpx.get(f"{emulator.batch_url}/images/v2", headers=headers)

    assert emulator.batch_url != emulator.base_url
    assert response.status_code == 200


def test_list_v1_pages_are_checked_like_list_v2(emulator: Emulator) -> None:
    url = f"{emulator.main_url}/accounts/{emulator.account_id}/images/v1"
    headers = {"Authorization": f"Bearer {emulator.api_token}"}

    response = httpx.get(url, headers=headers, params={"per_page": -1})

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == 5400


def test_a_bug_in_the_emulator_answers_an_internal_error_envelope(
    batch: BatchClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(batch.emulator.app.api, "details", broken)
    response = batch.get("/images/v1/anything")

    assert response.status_code == 500
    assert response.json()["errors"][0]["code"] == 5500


def test_metadata_lookups_stay_right_as_images_change(
    batch: BatchClient, origin: LocalOrigin
) -> None:
    def upload(image_id: str, meta: dict[str, object]) -> None:
        response = batch.upload(
            url=origin.synthetic(4, 4), id=image_id, metadata=json.dumps(meta)
        )
        assert response.status_code == 200

    upload("a", {"k": "1"})
    assert list_all(batch, **{"meta.k[eq]": "1"}) == ["a"]
    upload("b", {"k": 1})
    upload("c", {"k": True})
    for index in range(12):
        upload(f"n{index}", {"k": "1"})
    batch.http.patch("/images/v1/a", json={"metadata": {"k": "2"}})
    batch.http.delete("/images/v1/n0")

    assert list_all(batch, **{"meta.k[eq]": "2"}) == ["a"]
    assert list_all(batch, **{"meta.k[eq]": "true"}) == ["c"]
    assert list_all(batch, **{"meta.k[eq:number]": "1"}) == ["b"]
    ones = list_all(batch, **{"meta.k[eq]": "1", "per_page": "10"})
    assert ones == [f"n{index}" for index in range(11, 0, -1)] + ["b"]
    ascending = list_all(
        batch, **{"meta.k[eq]": "1", "per_page": 10, "sort_order": "asc"}
    )
    assert ascending == ones[::-1]
