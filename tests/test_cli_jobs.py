"""The load, status and db upgrade commands, through click, exit codes included."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from migrator.cli import _register_commands, cli, main


def migrator(*args: str, input: str | None = None, **env: str) -> Result:
    _register_commands()
    return CliRunner(env=env).invoke(cli, list(args), input=input)


@pytest.fixture
def urls(tmp_path: Path) -> Path:
    path = tmp_path / "urls.txt"
    path.write_text("https://img.test/1.jpg\nhttps://img.test/2.jpg\n")
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


def test_load_reports_counts_and_exits_0(urls: Path, db: str) -> None:
    result = migrator("load", str(urls), "--db", db)

    assert result.exit_code == 0, result.output
    assert "2 loaded, 0 unchanged, 0 changed, 0 rejected" in result.stderr


def test_load_again_finds_everything_unchanged(urls: Path, db: str) -> None:
    migrator("load", str(urls), "--db", db)

    result = migrator("load", str(urls), "--db", db, "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "loaded": 0,
        "unchanged": 2,
        "changed": 0,
        "rejected": 0,
    }


def test_rejected_rows_are_printed_and_exit_2(tmp_path: Path, db: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "url,id\nhttps://img.test/1.jpg,a\nftp://img.test/2.jpg,b\nhttps://x.test/,/c\n"
    )

    result = migrator("load", str(manifest), "--db", db, "--json")

    assert result.exit_code == 2
    assert json.loads(result.stdout)["rejected"] == 2
    assert (
        f"{manifest}:3: url: must be an http or https URL, not 'ftp'" in result.stderr
    )
    assert f"{manifest}:4: id: must not start or end with '/'" in result.stderr
    assert "Traceback" not in result.output


def test_load_reads_stdin_with_id_from_path(db: str) -> None:
    result = migrator(
        "load",
        "-",
        "--id-from",
        "path",
        "--db",
        db,
        "--json",
        input="https://cdn.test/shop/boot.jpg\n",
    )

    assert result.exit_code == 0
    assert json.loads(result.stdout)["loaded"] == 1
    status = json.loads(migrator("status", "--db", db, "--json").stdout)
    assert status["states"]["pending"] == 1


def test_format_option_reads_any_name(tmp_path: Path, db: str) -> None:
    manifest = tmp_path / "export.dat"
    manifest.write_text('{"url": "https://img.test/1.jpg"}\n')

    assert migrator("load", str(manifest), "--db", db).exit_code == 2
    result = migrator("load", str(manifest), "--format", "jsonl", "--db", db)

    assert result.exit_code == 0, result.output


def test_unknown_extension_is_a_usage_error(tmp_path: Path, db: str) -> None:
    manifest = tmp_path / "export.dat"
    manifest.write_text("https://img.test/1.jpg\n")

    result = migrator("load", str(manifest), "--db", db)

    assert result.exit_code == 2
    assert "--format" in result.stderr
    assert not Path(db).exists()


def test_missing_manifest_is_a_usage_error(tmp_path: Path, db: str) -> None:
    result = migrator("load", str(tmp_path / "gone.txt"), "--db", db)

    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_db_comes_from_the_environment(urls: Path, db: str) -> None:
    result = migrator("load", str(urls), MIGRATOR_DB=db)

    assert result.exit_code == 0
    assert Path(db).exists()


def test_status_shows_states_and_errors(urls: Path, db: str) -> None:
    migrator("load", str(urls), "--db", db)

    result = migrator("status", "--db", db)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"Job table {db}: 2 rows"
    assert lines[1].split() == ["pending", "2"]


def test_status_json_is_one_document(urls: Path, db: str) -> None:
    migrator("load", str(urls), "--db", db)

    result = migrator("status", "--db", db, "--json")

    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert (document["db"], document["total"], document["remaining"]) == (db, 2, 2)


def test_status_of_a_missing_job_table_is_a_usage_error(db: str) -> None:
    result = migrator("status", "--db", db)

    assert result.exit_code == 2
    assert "no job table at" in result.stderr
    assert not Path(db).exists()


def test_db_upgrade_names_the_revision(db: str) -> None:
    result = migrator("db", "upgrade", "--db", db)

    assert result.exit_code == 0
    assert result.stdout.startswith(f"job table {db} is at schema revision ")


def test_unopenable_job_table_exits_3_without_a_traceback(
    urls: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(
        sys, "argv", ["migrator", "load", str(urls), "--db", str(blocker / "jobs.db")]
    )

    with pytest.raises(SystemExit) as stopped:
        main()

    assert stopped.value.code == 3
    error = capsys.readouterr().err
    assert error.startswith("Error: cannot")
    assert "Traceback" not in error


def test_every_command_has_help_with_examples() -> None:
    for command in (["load"], ["status"], ["db", "upgrade"]):
        result = migrator(*command, "--help")

        assert result.exit_code == 0
        assert "Examples:" in result.stdout
