"""``gpubroker simulate``: a clear error without traces; tables and files with them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli import app
from broker.simulation import report
from tests.simulation.test_scenarios import write_skynomad_like

runner = CliRunner()


def test_simulate_without_traces_fails_and_names_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-traces-here"
    result = runner.invoke(app, ["simulate", "--scenario", "skynomad-h100", "--traces", str(missing)])
    assert result.exit_code == 1
    assert "no-traces-here" in result.output.replace("\n", "")
    assert "spot traces not found" in result.output


def test_simulate_takes_the_folder_from_the_environment(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["simulate", "--scenario", "cant-be-late"], env={"GPUBROKER_TRACES": str(tmp_path / "absent")}
    )
    assert result.exit_code == 1 and "absent" in result.output.replace("\n", "")


def test_simulate_rejects_an_unknown_policy(tmp_path: Path) -> None:
    write_skynomad_like(tmp_path)
    result = runner.invoke(
        app, ["simulate", "--scenario", "skynomad-h100", "--traces", str(tmp_path), "--policies", "up_s,nope"]
    )
    assert result.exit_code == 1 and "nope" in result.output


def test_simulate_prints_the_table_and_writes_the_outputs(tmp_path: Path) -> None:
    write_skynomad_like(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "simulate", "--scenario", "skynomad-h100", "--traces", str(tmp_path), "--out", str(out),
            "--policies", "on_demand,up_s,optimum", "--processes", "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| UP(S) eager failover | 6 |" in result.output
    assert "| Optimal (offline DP) | 6 |" in result.output
    for name in ("policies.md", "summary.csv", "comparison.csv", "runs.csv", "policies.png"):
        assert (out / name).stat().st_size > 0, name


def test_simulate_without_matplotlib_writes_the_tables_and_says_how_to_get_the_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_skynomad_like(tmp_path)
    out = tmp_path / "out"
    # As on an install without the 'plot' extra.
    monkeypatch.setattr(report, "plot_available", lambda: False)
    result = runner.invoke(
        app,
        [
            "simulate", "--scenario", "skynomad-h100", "--traces", str(tmp_path), "--out", str(out),
            "--policies", "on_demand", "--processes", "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "gpubroker[plot]" in result.output
    assert (out / "summary.csv").stat().st_size > 0
    assert not (out / "policies.png").exists()
