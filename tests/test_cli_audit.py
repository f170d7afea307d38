"""plan and verify through the command line, against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.client import ImageFields
from migrator.emulator import Emulator
from migrator.store import JobStore, State
from tests.fixtures.cli import Outcome, invoke
from tests.fixtures.emulator import LocalOrigin
from tests.fixtures.runner import client_for
from tests.test_store_reports import add_row, state_of


def migrator(*args: str, emulator: Emulator | None = None) -> Outcome:
    env = {}
    if emulator is not None:
        env = {
            "CLOUDFLARE_ACCOUNT_ID": emulator.account_id,
            "CLOUDFLARE_API_TOKEN": emulator.api_token,
            "MIGRATOR_API_URL": emulator.main_url,
            "MIGRATOR_BATCH_URL": emulator.batch_url,
        }
    return invoke(*args, env=env)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


def test_plan_counts_uploads_updates_and_skips(db: str) -> None:
    store = JobStore.open(db)
    add_row(store, "https://a.test/1.png", State.PENDING)
    add_row(store, "https://a.test/2.png", State.PENDING, action="update")
    add_row(store, "https://a.test/3.png", State.DONE)
    store.close()

    text = migrator("plan", "--db", db)
    as_json = migrator("plan", "--db", db, "--json", "--tokens", "2", "--rate", "1")

    assert text.exit_code == 0
    assert text.stdout.splitlines()[0].split() == ["to", "upload", "1"]
    assert as_json.exit_code == 0
    plan = json.loads(as_json.stdout)
    assert (plan["upload"], plan["update"], plan["skip"]) == (1, 1, 1)
    assert plan["requests"] == 4  # two images, one batch token each
    assert plan["seconds"] == 2.0


def test_plan_check_sources_finds_what_cloudflare_would_refuse(
    db: str, origin: LocalOrigin, tmp_path: Path
) -> None:
    store = JobStore.open(db)
    add_row(store, origin.synthetic(300, 200, "jpg"), State.PENDING)
    add_row(store, origin.dead(), State.PENDING)
    add_row(store, origin.synthetic(300, 200, "tiff"), State.PENDING)
    add_row(store, str(tmp_path / "gone.png"), State.PENDING, source_kind="file")
    store.close()

    result = migrator("plan", "--db", db, "--check-sources", "--json")

    assert result.exit_code == 1
    problems = [json.loads(line) for line in result.stdout.splitlines()[1:]]
    assert [p["problem"] for p in problems] == [
        "unreachable",
        "wrong-format",
        "unreachable",
    ]
    assert "3 of 4 sources would fail" in result.stderr


def test_verify_reports_missing_and_different_images_and_requeues_them(
    db: str, emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        kept = client.upload_url(
            origin.synthetic(20, 20), ImageFields(metadata={"migrator_key": "k1"})
        )
        changed = client.upload_url(
            origin.synthetic(20, 20),
            ImageFields(custom_id="changed", metadata={"alt": "new"}),
        )
    store = JobStore.open(db)
    add_row(store, "https://a.test/kept.png", State.DONE, image_id=kept.id)
    add_row(
        store,
        "https://a.test/changed.png",
        State.DONE,
        custom_id="changed",
        image_id=changed.id,
        metadata='{"alt":"old"}',
    )
    add_row(store, "https://a.test/lost.png", State.DONE, image_id="lost-id")
    store.close()

    checked = migrator("verify", "--db", db, emulator=emulator)
    repaired = migrator("verify", "--db", db, "--requeue", emulator=emulator)

    assert checked.exit_code == 1
    lines = sorted(checked.stdout.splitlines())
    assert lines[0].startswith("differs   changed  https://a.test/changed.png")
    assert lines[1].startswith("missing   lost-id  https://a.test/lost.png")
    assert "3 checked, 1 missing, 1 different" in checked.stderr
    assert repaired.exit_code == 1
    assert "2 rows back to pending" in repaired.stderr
    store = JobStore.open(db)
    assert state_of(store, "https://a.test/changed.png")["action"] == "update"
    assert state_of(store, "https://a.test/lost.png")["action"] == "upload"
    assert store.count_in(State.DONE) == 1
    store.close()


def test_verify_of_a_faithful_migration_exits_zero(
    db: str, emulator: Emulator, origin: LocalOrigin
) -> None:
    with client_for(emulator) as client:
        image = client.upload_url(origin.synthetic(20, 20), ImageFields())
    store = JobStore.open(db)
    add_row(store, "https://a.test/1.png", State.DONE, image_id=image.id)
    store.close()

    result = migrator("verify", "--db", db, "--format", "jsonl", emulator=emulator)

    assert result.exit_code == 0
    assert result.stdout == ""


def test_verify_without_credentials_is_a_configuration_error(db: str) -> None:
    result = invoke("verify", "--db", db, env={"CLOUDFLARE_ACCOUNT_ID": None})

    assert result.exit_code == 3
    assert "CLOUDFLARE_ACCOUNT_ID" in result.stderr
