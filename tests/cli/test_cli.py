"""The gpubroker CLI in-process against a real database (DATABASE_URL = a per-test database)."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli import app
from broker.db.schema import head_revision

runner = CliRunner()
AWS_FIXTURE = Path(__file__).resolve().parent.parent / "pricing" / "fixtures" / "skypilot" / "aws" / "vms.csv"


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    # GPUBROKER_HOME points somewhere empty: with DATABASE_URL set no embedded server may start there.
    return {"DATABASE_URL": database_url, "GPUBROKER_HOME": str(tmp_path / "home")}


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    # The console wraps long lines (a long temporary path moves the break): compare words, not lines.
    return result.exit_code, " ".join(result.output.split())


def test_help_documents_every_command() -> None:
    code, out = run({}, "--help")
    assert code == 0
    for command in ("serve", "offers", "db", "catalog"):
        assert command in out
    for sub, expected in (("db", ("upgrade", "current")), ("catalog", ("import", "list"))):
        code, out = run({}, sub, "--help")
        assert code == 0 and all(e in out for e in expected)


def test_offers_table_lists_h100_from_the_major_clouds(env: dict[str, str], tmp_path: Path) -> None:
    code, out = run(env, "offers", "--gpu", "H100", "--limit", "2000")
    assert code == 0, out
    for header in (
        "CLOUD",
        "REGION",
        "INSTANCE TYPE",
        "GPUS",
        "CAPACITY",
        "$/HOUR",
        "$/GPU-HOUR",
        "PRICE AGE",
    ):
        assert header in out
    # Every cloud in the shared price data lists H100s.
    clouds = ("aws", "gcp", "lambda", "runpod", "nebius", "azure", "oci", "cudo", "vast", "fluidstack")
    for cloud in (*clouds, "paperspace", "do"):
        assert f"│ {cloud} " in out, cloud
    assert not (tmp_path / "home" / "pgdata").exists()  # DATABASE_URL set: embedded server never started


def test_offers_json_with_filters(env: dict[str, str]) -> None:
    code, out = run(
        env,
        "offers",
        "--gpu",
        "H100",
        "--count",
        "8",
        "--cloud",
        "aws",
        "--cloud",
        "lambda",
        "--capacity",
        "on-demand",
        "--max-price",
        "5",
        "--limit",
        "7",
        "--json",
    )
    assert code == 0, out
    rows = json.loads(out)
    assert 0 < len(rows) <= 7
    assert {r["cloud"] for r in rows} <= {"aws", "lambda"}
    assert all(r["accelerator_count"] == 8 and r["capacity_type"] == "on-demand" for r in rows)
    assert all(Decimal(r["price_per_gpu_hour"]) <= 5 for r in rows)
    per_gpu = [Decimal(r["price_per_gpu_hour"]) for r in rows]
    assert per_gpu == sorted(per_gpu)
    assert isinstance(rows[0]["price_age_seconds"], int) and rows[0]["observed_at"].startswith("2026-11-23")


@pytest.mark.parametrize("bad", ["cheap", "-1", "nan"])
def test_bad_max_price_is_a_clear_error(env: dict[str, str], bad: str) -> None:
    code, out = run(env, "offers", "--gpu", "H100", "--max-price", bad)
    assert code == 2 and "--max-price" in out


def test_no_match_says_so(env: dict[str, str]) -> None:
    code, out = run(env, "offers", "--gpu", "H100", "--max-price", "0.01")
    assert code == 1 and "no offers match" in out


def test_catalog_import_adds_a_snapshot_that_becomes_current(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "v8" / "aws" / "vms.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(AWS_FIXTURE.read_bytes())
    code, out = run(env, "catalog", "import", str(target), "--observed-at", "2027-01-01T00:00:00Z")
    assert code == 0, out
    assert "imported" in out and "aws" in out
    code, out = run(env, "catalog", "import", str(target), "--observed-at", "2027-01-01T00:00:00Z")
    assert code == 0 and "already imported" in out
    code, out = run(env, "offers", "--cloud", "aws", "--json", "--limit", "10000")
    rows = json.loads(out)
    assert rows and {r["source"] for r in rows} == {"skypilot:aws"}
    assert {r["observed_at"] for r in rows} == {"2027-01-01T00:00:00Z"}
    code, out = run(env, "catalog", "list")
    assert code == 0 and "skypilot:aws" in out and "bundled" in out


def test_bad_catalog_imports_nothing_and_names_file_line_field(env: dict[str, str], tmp_path: Path) -> None:
    good = AWS_FIXTURE.read_text().splitlines()
    header = good[0].split(",")
    bad_row = good[1].split(",")
    bad_row[header.index("Price")] = "-3.00"
    target = tmp_path / "aws" / "vms.csv"
    target.parent.mkdir()
    target.write_text("\n".join([good[0], *good[1:3], ",".join(bad_row)]) + "\n")
    code, _ = run(env, "catalog", "list")
    code, out = run(env, "catalog", "import", str(target))
    assert code == 2
    flat = " ".join(out.split())
    assert "vms.csv:4" in flat.replace(os.linesep, "") and "Price" in flat and "nothing was imported" in flat
    code, out = run(env, "catalog", "list")
    assert "skypilot" not in out


def test_catalog_import_needs_a_known_cloud(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "prices.csv"
    target.write_bytes(AWS_FIXTURE.read_bytes())
    code, out = run(env, "catalog", "import", str(target))
    assert code == 2 and "--cloud" in out
    code, out = run(env, "catalog", "import", str(target), "--cloud", "ibm")
    assert code == 2 and "not supported" in out
    code, out = run(env, "catalog", "import", str(tmp_path / "missing" / "aws" / "vms.csv"))
    assert code == 2 and "cannot read" in out


def test_db_current_and_upgrade(empty_database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": empty_database_url, "GPUBROKER_HOME": str(tmp_path)}
    code, out = run(env, "db", "current")
    assert code == 0 and "(empty database)" in out and "behind" in out
    code, out = run(env, "db", "upgrade")
    assert code == 0 and head_revision() in out
    code, out = run(env, "db", "current")
    assert code == 0 and f"current: {head_revision()}" in out and "up to date" in out


def test_a_non_postgres_database_url_is_refused(tmp_path: Path) -> None:
    code, out = run({"DATABASE_URL": "sqlite:///x.db", "GPUBROKER_HOME": str(tmp_path)}, "db", "current")
    assert code == 2 and "PostgreSQL" in out


def test_an_unusable_home_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    home = tmp_path / "not-a-directory"
    home.write_text("")
    code, out = run({"GPUBROKER_HOME": str(home)}, "db", "current")
    assert code == 1
    assert "could not start the embedded PostgreSQL" in out and "DATABASE_URL" in out
