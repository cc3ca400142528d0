"""A stored report read back (``from_json``) is the report that was stored: what a resumed delivery
sends."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from broker.reports.build import ReportOptions, build_and_store
from broker.reports.export import from_json, to_json
from broker.reports.model import UtilizationFigures, build_report
from broker.services.tenancy import create_org
from tests.reports.fleet import AFTER, D, seed_fleet
from tests.reports.test_model import DAY, inputs, line
from tests.services.test_costs import DAY as COSTS_DAY


def test_the_hand_computed_fleets_report_reads_back_equal(session: Session) -> None:
    org = create_org(session, "acme-roundtrip", COSTS_DAY - timedelta(days=60))
    seed_fleet(session, org.id)
    stored = build_and_store(session, org.id, D, ReportOptions(timezone="UTC"), AFTER)
    assert stored.report.commitments and stored.report.utilization and stored.report.top_workloads
    assert from_json(stored.data) == stored.report
    assert to_json(from_json(stored.data)) == stored.data


def test_a_report_without_utilization_with_anomalies_reads_back_equal() -> None:
    history = {DAY - timedelta(days=1): [line("100", project="p2")]}
    report = build_report(inputs([line("150.5", ondemand="200"), line("3", project=None)], history))
    assert report.utilization is None and report.anomalies
    assert from_json(to_json(report)) == report
    busy = build_report(
        inputs([line("1")], utilization=UtilizationFigures(Decimal("12.5"), 4, 2, Decimal("0.25")))
    )
    assert from_json(to_json(busy)) == busy


def test_another_version_is_refused() -> None:
    data = to_json(build_report(inputs([line("1")])))
    with pytest.raises(ValueError, match="version 99"):
        from_json({**data, "version": 99})
