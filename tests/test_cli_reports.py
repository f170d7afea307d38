"""failures, retry and export through the command line, exit codes included."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.store import JobStore, State
from migrator.store.schema import images
from tests.fixtures.cli import Outcome, invoke
from tests.test_store_reports import add_row


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "jobs.db")
    store = JobStore.open(path)
    add_row(
        store,
        "https://a.test/scan.tiff",
        State.FAILED,
        error_code="5455",
        error_message="Unsupported image format",
        http_status=415,
        attempts=1,
    )
    add_row(
        store,
        "https://a.test/gone.jpg",
        State.FAILED,
        key="id:products/gone",
        custom_id="products/gone",
        metadata='{"sku":"G-1"}',
        error_code="http-404",
        error_message="origin answered 404",
        attempts=1,
    )
    add_row(
        store,
        "/srv/photos/a.png",
        State.DONE,
        source_kind="file",
        image_id="cf-1",
        variants='["https://imagedelivery.net/h/cf-1/public"]',
    )
    store.close()
    return path


def migrator(*args: str) -> Outcome:
    return invoke(*args)


def test_failures_table_shows_code_source_and_message(db: str) -> None:
    result = migrator("failures", "--db", db)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CODE", "TRIES", "SOURCE", "MESSAGE"]
    assert lines[1].startswith("5455")
    assert "https://a.test/scan.tiff" in lines[1]
    assert "(id products/gone)" in lines[2]
    assert "2 failed rows" in result.stderr


def test_failures_csv_starts_with_the_manifest_columns(db: str) -> None:
    result = migrator("failures", "--db", db, "--format", "csv", "--code", "http-404")

    assert result.exit_code == 0
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert list(row)[:6] == [
        "url",
        "file",
        "id",
        "metadata",
        "requireSignedURLs",
        "creator",
    ]
    assert row["url"] == "https://a.test/gone.jpg"
    assert row["id"] == "products/gone"
    assert json.loads(row["metadata"]) == {"sku": "G-1"}
    assert row["error_code"] == "http-404"


def test_failures_json_lines_are_one_object_per_row(db: str) -> None:
    result = migrator("failures", "--db", db, "--format", "jsonl")

    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["error_code"] for row in rows] == ["5455", "http-404"]
    assert rows[0]["http_status"] == 415
    assert rows[0]["id"] is None


def test_failures_with_a_bad_duration_is_a_usage_error(db: str) -> None:
    result = migrator("failures", "--db", db, "--older-than", "soon")

    assert result.exit_code == 2
    assert "not a duration" in result.stderr


def test_retry_moves_only_the_matching_failures_to_pending(db: str) -> None:
    result = migrator("retry", "--db", db, "--code", "http-404", "--newer-than", "1h")

    assert result.exit_code == 0
    assert "1 failed rows back to pending" in result.stdout
    store = JobStore.open(db)
    assert [r.source for r in store.rows_in(State.PENDING)] == [
        "https://a.test/gone.jpg"
    ]
    assert store.count_in(State.FAILED) == 1
    store.close()


def test_retry_says_so_when_nothing_matches(db: str) -> None:
    result = migrator("retry", "--db", db, "--source", "https://elsewhere.test/*")

    assert result.exit_code == 0
    assert "nothing changed" in result.stdout


def test_export_writes_the_mapping_as_csv_to_a_file(db: str, tmp_path: Path) -> None:
    out = tmp_path / "mapping.csv"
    result = migrator("export", "--db", db, "-o", str(out))

    assert result.exit_code == 0
    (row,) = csv.DictReader(out.open())
    assert row == {
        "source": "/srv/photos/a.png",
        "image_id": "cf-1",
        "variants": "https://imagedelivery.net/h/cf-1/public",
        "uploaded_at": "",
    }
    assert "1 images written" in result.stderr


def test_export_as_json_lines_keeps_variants_a_list(db: str) -> None:
    result = migrator("export", "--db", db, "--format", "jsonl")

    assert result.exit_code == 0
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["variants"] == ["https://imagedelivery.net/h/cf-1/public"]


def test_the_failures_csv_loads_back_as_a_manifest(tmp_path: Path) -> None:
    db = str(tmp_path / "loaded.db")
    manifest = tmp_path / "products.csv"
    manifest.write_text(
        "url,id,metadata,creator\n"
        'https://a.test/boot.tif,products/boot,"{""sku"":""B-1""}",sync\n'
        "https://a.test/hat.jpg,,,\n"
    )
    assert invoke("load", "--db", db, str(manifest)).exit_code == 0
    store = JobStore.open(db)
    with store.transaction() as connection:
        connection.execute(
            images.update().values(state="failed", error_code="5455", attempts=1)
        )
    store.close()

    fix = tmp_path / "fix.csv"
    assert (
        invoke("failures", "--db", db, "--format", "csv", "-o", str(fix)).exit_code == 0
    )
    reloaded_as_is = invoke("load", "--db", db, str(fix))
    fix.write_text(fix.read_text().replace("boot.tif", "boot.jpg"))
    reloaded_fixed = invoke("load", "--db", db, str(fix))

    assert reloaded_as_is.exit_code == 0
    assert "0 loaded, 2 unchanged" in reloaded_as_is.stderr
    assert reloaded_fixed.exit_code == 0
    assert "1 changed" in reloaded_fixed.stderr
    store = JobStore.open(db)
    (pending,) = store.rows_in(State.PENDING)
    store.close()
    assert (pending.source, pending.custom_id) == (
        "https://a.test/boot.jpg",
        "products/boot",
    )
    assert pending.metadata == {"sku": "B-1"}


@pytest.mark.parametrize(
    "command", ["demo", "failures", "retry", "export", "verify", "plan"]
)
def test_every_operations_command_has_help_with_examples(command: str) -> None:
    result = migrator(command, "--help")

    assert result.exit_code == 0
    assert "Examples:" in result.stdout


def test_reports_refuse_a_job_table_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"

    result = migrator("failures", "--db", str(missing))

    assert result.exit_code == 2
    assert "no job table at" in result.stderr
    assert not missing.exists()


@pytest.mark.parametrize("module", ["reports", "plan", "verify", "demo", "cron"])
def test_each_operations_command_module_imports_on_its_own(module: str) -> None:
    # Command modules import one another; a fresh interpreter shows any cycle
    # that the order of imports in one test process would hide.
    subprocess.run([sys.executable, "-c", f"import migrator.cli.{module}"], check=True)
