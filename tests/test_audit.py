"""Checking sources before a run and images after it, against the emulator."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from migrator.audit import (
    Fault,
    Problem,
    check_source,
    check_sources,
    differences,
    judge,
    verify,
)
from migrator.client import ImageFields, ImageRecord
from migrator.emulator import Emulator
from migrator.emulator.origin import make_image
from migrator.store import Action, State
from migrator.store.reports import ReportRow
from tests.fixtures.emulator import LocalOrigin
from tests.fixtures.runner import client_for


def report_row(source: str, **values: Any) -> ReportRow:
    row = ReportRow(
        row_id=1,
        source=source,
        source_kind="file" if source.startswith("/") else "url",
        custom_id=None,
        image_id=None,
        metadata=None,
        require_signed_urls=False,
        creator=None,
        state=State.DONE,
        action=Action.UPLOAD,
        attempts=1,
        error_code=None,
        error_message=None,
        http_status=None,
        variants=[],
        uploaded_at=None,
        manifest=None,
        line=None,
        updated_at=dt.datetime.now(dt.timezone.utc),
    )
    return dataclasses.replace(row, **values)


def image(**values: Any) -> ImageRecord:
    record = ImageRecord(
        id="cf-1",
        variants=(),
        uploaded_at=None,
        meta={},
        require_signed_urls=False,
        creator=None,
    )
    return dataclasses.replace(record, **values)


def test_a_small_jpeg_passes() -> None:
    assert judge(make_image(64, 48, "jpg"), size=2000) is None


@pytest.mark.parametrize(
    ("head", "size", "fault"),
    [
        (make_image(64, 48, "jpg"), 11_000_000, Fault.TOO_LARGE),
        (make_image(64, 48, "tiff"), 9000, Fault.WRONG_FORMAT),
        (b"<html>not found</html>", 22, Fault.WRONG_FORMAT),
        (make_image(13_000, 10, "png"), 3000, Fault.TOO_MANY_PIXELS),
        (make_image(10_001, 10_001, "gif"), 3000, Fault.TOO_MANY_PIXELS),
        (make_image(11_900, 11_900, "gif"), 3000, Fault.TOO_MANY_PIXELS),
    ],
)
def test_sources_over_cloudflares_limits_are_caught(
    head: bytes, size: int, fault: Fault
) -> None:
    verdict = judge(head, size)

    assert verdict is not None
    assert verdict[0] is fault


def test_svg_has_no_pixel_limit() -> None:
    assert judge(make_image(20_000, 20_000, "svg"), size=200) is None


def test_urls_are_probed_on_the_origin(emulator: Emulator, origin: LocalOrigin) -> None:
    rows = [
        report_row(origin.synthetic(800, 600, "jpg")),
        report_row(origin.dead()),
        report_row(origin.synthetic(800, 600, "bmp")),
        report_row(origin.synthetic(20, 20, "png", size=10_500_000)),
    ]

    with client_for(emulator) as client:
        found = [problem for _, problem in check_sources(rows, client, workers=2)]

    assert found[0] is None
    assert [p.fault for p in found[1:] if p] == [
        Fault.UNREACHABLE,
        Fault.WRONG_FORMAT,
        Fault.TOO_LARGE,
    ]
    assert found[1] is not None
    assert "HTTP 404" in found[1].detail


def test_local_files_are_read_not_fetched(emulator: Emulator, tmp_path: Path) -> None:
    good = tmp_path / "good.webp"
    good.write_bytes(make_image(40, 30, "webp"))

    with client_for(emulator) as client:
        assert check_source(report_row(str(good)), client) is None
        missing = check_source(report_row(str(tmp_path / "gone.png")), client)

    assert missing is not None
    assert missing.fault is Fault.UNREACHABLE


def test_migrator_key_is_not_a_difference() -> None:
    row = report_row("https://a.test/x.png", metadata={"alt": "x"})
    stored = image(meta={"alt": "x", "migrator_key": "0" * 32})

    assert differences(row, stored) == []


def test_metadata_flag_and_creator_differences_are_each_named() -> None:
    row = report_row(
        "https://a.test/x.png",
        metadata={"alt": "x"},
        require_signed_urls=True,
        creator="team",
    )
    stored = image(meta={"alt": "y"}, creator="other")

    found = differences(row, stored)

    assert len(found) == 3
    assert found[0] == 'metadata is {"alt":"y"}, not {"alt":"x"}'


def test_verify_finds_missing_and_different_images(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        kept = client.upload_url(
            origin.synthetic(20, 20), ImageFields(custom_id="kept", metadata={"a": 1})
        )
        changed = client.upload_url(
            origin.synthetic(20, 20), ImageFields(metadata={"a": 1})
        )
        client.update(changed.id, ImageFields(metadata={"a": 2}))
        rows = [
            report_row("https://a.test/1", image_id=kept.id, metadata={"a": 1}),
            report_row("https://a.test/2", image_id=changed.id, metadata={"a": 1}),
            report_row("https://a.test/3", image_id="never-uploaded"),
        ]
        findings = [finding for _, finding in verify(rows, client, workers=2)]

    assert findings[0] is None
    assert [f.problem for f in findings[1:] if f] == [Problem.DIFFERS, Problem.MISSING]
