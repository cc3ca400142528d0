"""Cost lines and burn rate on a real database, against a fleet whose costs are worked out by hand.

Also home of the helpers the accounting, cost API and report tests share to put orgs, projects,
commitments and price observations in the database directly, and of ``add_testcloud_instance``.
Prices and instances are on the made-up provider ``testcloud`` so the bundled catalog (loaded in
every test database) never interferes, except in the one test that means to read it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from broker.db.fleet import CommitmentRow, Project
from broker.db.models import OfferPrice, PriceSnapshot, PriceSnapshotCloud
from broker.services.budgets import spent_this_month
from broker.services.costs import CostLine, burn_rate, cost_lines
from broker.services.tenancy import create_org
from tests.fleet_rows import add_instance_row

DAY = datetime(2026, 11, 10, tzinfo=UTC)  # midnight UTC
H = timedelta(hours=1)
CLOUD = "testcloud"
_ids = itertools.count(1)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def new_org(session: Session, name: str | None = None) -> tuple[str, str]:
    """A new organization and the id of its default project."""
    org = create_org(session, name or f"org{next(_ids)}", DAY - timedelta(days=30))
    project = session.scalars(select(Project.id).where(Project.org_id == org.id)).one()
    return org.id, project


def add_project(session: Session, org_id: str, name: str, max_usd_per_month: str | None = None) -> str:
    pid = f"prj_t{next(_ids):06d}"
    limit = Decimal(max_usd_per_month) if max_usd_per_month is not None else None
    session.add(Project(id=pid, org_id=org_id, name=name, max_usd_per_month=limit, created_at=DAY))
    session.flush()
    return pid


# The instances of these tests: t8s on testcloud in r1 (zone r1-a), where the price rows put them,
# with no provider id (a row of ``tests.fleet_rows``: created when launched, a workload of its own).
add_testcloud_instance = partial(
    add_instance_row, provider=CLOUD, region="r1", zone="r1-a", instance_type="t8", provider_instance_id=None
)


def add_commitment(
    session: Session,
    org_id: str,
    *,
    starts_at: datetime,
    ends_at: datetime,
    gpu_count: int = 16,
    price_per_gpu_hour: str = "2",
    deleted_at: datetime | None = None,
    project_id: str | None = None,
    provider: str = CLOUD,
    region: str = "r1",
) -> str:
    cid = f"cmt_t{next(_ids):06d}"
    session.add(
        CommitmentRow(
            id=cid,
            org_id=org_id,
            project_id=project_id,
            provider=provider,
            region=region,
            accelerator="H100",
            gpu_count=gpu_count,
            kind="reserved-instance",
            starts_at=starts_at,
            ends_at=ends_at,
            price_per_gpu_hour=Decimal(price_per_gpu_hour),
            created_at=starts_at,
            updated_at=starts_at,
            deleted_at=deleted_at,
        )
    )
    session.flush()
    return cid


def add_prices(
    session: Session,
    observed_at: datetime,
    rows: list[tuple[str, str, str, str, int, str, str]],
    *,
    cloud: str = CLOUD,
) -> None:
    """One price snapshot of ``cloud``: rows of (region, zone, instance_type, accelerator, GPUs,
    capacity type, price per instance-hour)."""
    snapshot = PriceSnapshot(
        source="test",
        source_name=f"test-{next(_ids)}",
        content_sha256=f"{next(_ids):064d}",
        observed_at=observed_at,
        offer_count=len(rows),
    )
    session.add(snapshot)
    session.flush()
    session.add(PriceSnapshotCloud(snapshot_id=snapshot.id, cloud=cloud, offer_count=len(rows)))
    for region, zone, instance_type, accelerator, count, capacity, price in rows:
        session.add(
            OfferPrice(
                snapshot_id=snapshot.id,
                cloud=cloud,
                region=region,
                zone=zone,
                instance_type=instance_type,
                accelerator=accelerator,
                accelerator_count=count,
                capacity_type=capacity,
                price_per_hour=Decimal(price),
                currency="USD",
                source="test",
                observed_at=observed_at,
            )
        )
    session.flush()


def by_id(lines: list[CostLine]) -> dict[str, CostLine]:
    return {(line.instance_id or line.commitment_id or ""): line for line in lines}


# --- the hand-computed fleet -----------------------------------------------------------------------


def test_spot_price_change_mid_run_applies_from_its_observed_time(session: Session) -> None:
    org, project = new_org(session)
    add_prices(session, DAY - timedelta(days=1), [("r1", "", "t8", "H100", 8, "on-demand", "40")])
    iid = add_testcloud_instance(
        session,
        org,
        project,
        launched_at=DAY + 10 * H,
        ended_at=DAY + 14 * H,
        price_per_hour="16",
        capacity_type="spot",
    )
    # Before launch: never applies. Another zone's price: never applies. 12:00 in its zone: applies.
    add_prices(session, DAY + 9 * H, [("r1", "r1-a", "t8", "H100", 8, "spot", "99")])
    add_prices(
        session,
        DAY + 12 * H,
        [("r1", "r1-a", "t8", "H100", 8, "spot", "8"), ("r1", "r1-b", "t8", "H100", 8, "spot", "1")],
    )
    line = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H))[iid]
    # 2 h at $16 + 2 h at $8 = $48; 4 h x 8 GPUs = 32 GPU-hours; on demand 4 h x $40 = $160.
    assert line.usd == Decimal(48)
    assert line.gpu_hours == line.used_gpu_hours == Decimal(32)
    assert line.ondemand_usd == Decimal(160)
    assert line.price_per_gpu_hour == Decimal(1)  # the last price, $8 per instance-hour / 8 GPUs
    assert (line.kind, line.capacity_type, line.project_id) == ("instance", "spot", project)


def test_region_wide_spot_price_applies_when_the_zone_has_none(session: Session) -> None:
    org, project = new_org(session)
    iid = add_testcloud_instance(
        session,
        org,
        project,
        launched_at=DAY,
        ended_at=DAY + 2 * H,
        price_per_hour="10",
        capacity_type="spot",
    )
    add_prices(session, DAY + H, [("r1", "", "t8", "H100", 8, "spot", "4")])
    line = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H))[iid]
    assert line.usd == Decimal(14)
    assert line.ondemand_usd is None  # no on-demand price of t8 or any 8 x H100 in r1


def test_on_demand_instance_ignores_spot_prices_and_falls_back_to_the_same_gpu_shape(
    session: Session,
) -> None:
    org, project = new_org(session)
    add_prices(
        session,
        DAY - timedelta(days=2),
        [
            ("r1", "r1-a", "t4b", "H100", 4, "on-demand", "20"),
            ("r1", "r1-b", "t4c", "H100", 4, "on-demand", "24"),
            ("r1", "r1-a", "t4", "H100", 4, "spot", "1"),
            ("r2", "r2-a", "t4d", "H100", 4, "on-demand", "5"),  # another region: not a fallback
        ],
    )
    iid = add_testcloud_instance(
        session, org, project, launched_at=DAY + 22 * H, price_per_hour="30", gpus=4, instance_type="t4"
    )
    add_prices(session, DAY + 23 * H, [("r1", "r1-a", "t4", "H100", 4, "spot", "2")])
    # Running across midnight: counted up to the window's end (02:00 the next day).
    line = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + 26 * H))[iid]
    assert line.usd == Decimal(120)  # 4 h x $30: spot observations do not touch an on-demand price
    assert line.gpu_hours == Decimal(16)
    assert line.ondemand_usd == Decimal(80)  # the cheapest 4 x H100 on demand in r1: $20


def test_on_demand_price_changes_apply_from_their_time_and_backfill_before_the_first(
    session: Session,
) -> None:
    org, project = new_org(session)
    iid = add_testcloud_instance(
        session, org, project, launched_at=DAY, ended_at=DAY + 4 * H, price_per_hour="30"
    )
    add_prices(session, DAY + H, [("r1", "r1-a", "t8", "H100", 8, "on-demand", "40")])
    add_prices(session, DAY + 3 * H, [("r1", "r1-a", "t8", "H100", 8, "on-demand", "50")])
    line = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H))[iid]
    # 00-01 before any observation: the first known ($40); 01-03 $40; 03-04 $50.
    assert line.ondemand_usd == Decimal(170)
    # A window that starts after the last observation reads the one in force (not the window's rows).
    line = by_id(
        cost_lines(session, org_id=org, start=DAY + 3 * H + 30 * timedelta(minutes=1), end=DAY + 24 * H)
    )[iid]
    assert line.ondemand_usd == Decimal(25)


def test_commitment_half_used_charges_its_commitment_not_per_hour_of_use(session: Session) -> None:
    org, project = new_org(session)
    add_prices(session, DAY - timedelta(days=1), [("r1", "r1-a", "t8", "H100", 8, "on-demand", "40")])
    cid = add_commitment(session, org, starts_at=DAY + 6 * H, ends_at=DAY + timedelta(days=3), gpu_count=16)
    iid = add_testcloud_instance(
        session,
        org,
        project,
        launched_at=DAY + 6 * H,
        ended_at=DAY + 18 * H,
        price_per_hour="16",
        capacity_type="reserved",
        commitment_id=cid,
    )
    lines = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H))
    commitment, instance = lines[cid], lines[iid]
    # 16 GPUs x 18 h (06:00-24:00) = 288 GPU-hours x $2 = $576, used or not.
    assert commitment.gpu_hours == Decimal(288)
    assert commitment.usd == Decimal(576)
    assert commitment.used_gpu_hours == Decimal(96)  # 8 GPUs x 12 h
    assert commitment.idle_waste_usd == Decimal(384)  # (288 - 96) x $2
    assert (commitment.kind, commitment.capacity_type, commitment.ondemand_usd) == (
        "commitment",
        "reserved",
        0,
    )
    assert instance.usd == 0 and instance.price_per_gpu_hour == 0
    assert instance.gpu_hours == Decimal(96)
    assert instance.ondemand_usd == Decimal(480)  # 12 h x $40: what it would have cost on demand
    savings = sum(x.ondemand_usd or 0 for x in lines.values()) - sum(x.usd for x in lines.values())
    assert savings == Decimal(480 - 576)  # half-used, the commitment lost money against on demand


def test_soft_deleted_commitment_stops_charging_at_deletion(session: Session) -> None:
    org, _ = new_org(session)
    cid = add_commitment(
        session, org, starts_at=DAY, ends_at=DAY + timedelta(days=30), gpu_count=10, deleted_at=DAY + 12 * H
    )
    gone = add_commitment(session, org, starts_at=DAY + 13 * H, ends_at=DAY + 20 * H, deleted_at=DAY + 12 * H)
    lines = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + timedelta(days=2)))
    assert lines[cid].gpu_hours == Decimal(120)
    assert lines[cid].usd == Decimal(240)
    assert gone not in lines  # deleted before it began: never charged


def test_window_clips_runs_and_now_stops_the_count(session: Session) -> None:
    org, project = new_org(session)
    # Still running:
    iid = add_testcloud_instance(session, org, project, launched_at=DAY - 5 * H, price_per_hour="10")
    lines = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H, now=DAY + 3 * H))
    assert lines[iid].usd == Decimal(30)
    assert cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H, now=DAY - H) == []


def test_lines_stay_inside_the_organization_and_project(session: Session) -> None:
    org, project = new_org(session)
    other_org, other_project = new_org(session)
    team = add_project(session, org, "team")
    mine = add_testcloud_instance(session, org, project, launched_at=DAY, ended_at=DAY + H)
    teams = add_testcloud_instance(session, org, team, launched_at=DAY, ended_at=DAY + H)
    add_testcloud_instance(session, other_org, other_project, launched_at=DAY, ended_at=DAY + H)
    add_commitment(session, other_org, starts_at=DAY, ends_at=DAY + H)
    assert set(by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + H))) == {mine, teams}
    assert set(by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + H, project_id=team))) == {teams}


def test_bundled_catalog_gives_the_on_demand_price_of_a_real_instance(session: Session) -> None:
    org, project = new_org(session)
    iid = add_testcloud_instance(
        session,
        org,
        project,
        launched_at=DAY,
        ended_at=DAY + 2 * H,
        provider="aws",
        region="us-east-1",
        zone="us-east-1a",
        instance_type="p5.48xlarge",
        price_per_hour="20",
        capacity_type="spot",
    )
    line = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H))[iid]
    # The bundled AWS on-demand price of a p5.48xlarge in us-east-1 is $55.04 (observed later,
    # the first known price); the bundled spot rows are other zones' (use1-az*), so none applies.
    assert line.ondemand_usd == Decimal("110.08")
    assert line.usd == Decimal(40)


def test_cost_lines_reads_a_fixed_number_of_queries(session: Session) -> None:
    def statements(n_instances: int) -> int:
        org, project = new_org(session)
        add_prices(session, DAY - H, [("r1", "r1-a", "t8", "H100", 8, "on-demand", "40")])
        cid = add_commitment(session, org, starts_at=DAY, ends_at=DAY + 24 * H)
        for k in range(n_instances):
            add_testcloud_instance(
                session, org, project, launched_at=DAY + k * timedelta(minutes=1), capacity_type="spot"
            )
        add_testcloud_instance(
            session, org, project, launched_at=DAY, commitment_id=cid, capacity_type="reserved"
        )
        seen: list[str] = []

        def count(*args: object) -> None:
            seen.append(str(args[2]))

        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", count)
        try:
            lines = cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert len(lines) == n_instances + 2
        return len(seen)

    assert statements(3) == statements(60)


def test_burn_rate_counts_running_instances_at_their_current_price_and_active_commitments(
    session: Session,
) -> None:
    org, project = new_org(session)
    team = add_project(session, org, "team")
    add_testcloud_instance(session, org, project, launched_at=DAY, price_per_hour="16", capacity_type="spot")
    add_prices(session, DAY + 12 * H, [("r1", "r1-a", "t8", "H100", 8, "spot", "8")])
    # Ends at 13:00:
    add_testcloud_instance(session, org, team, launched_at=DAY, ended_at=DAY + 13 * H, price_per_hour="100")
    add_testcloud_instance(session, org, team, launched_at=DAY + 13 * H, price_per_hour="7")  # 13:00: running
    add_testcloud_instance(session, org, team, launched_at=DAY + 14 * H, price_per_hour="1000")  # not yet
    cid = add_commitment(session, org, starts_at=DAY, ends_at=DAY + timedelta(days=1), project_id=team)
    add_testcloud_instance(
        session, org, team, launched_at=DAY, price_per_hour="500", commitment_id=cid, capacity_type="reserved"
    )
    add_commitment(session, org, starts_at=DAY, ends_at=DAY + timedelta(days=1), deleted_at=DAY + 12 * H)
    now = DAY + 13 * H
    # $8 (spot, after the 12:00 change) + $7 + 16 GPUs x $2 (the live commitment) = $47.
    assert burn_rate(session, org_id=org, now=now) == Decimal(47)
    assert burn_rate(session, org_id=org, now=now, project_id=team) == Decimal(39)
    assert burn_rate(session, org_id=org, now=DAY - H) == 0


def test_an_instance_running_past_its_commitments_end_pays_on_demand_from_then(session: Session) -> None:
    org, project = new_org(session)
    add_prices(session, DAY - timedelta(days=1), [("r1", "", "t8", "H100", 8, "on-demand", "40")])
    cid = add_commitment(session, org, starts_at=DAY, ends_at=DAY + 12 * H, gpu_count=8)
    iid = add_testcloud_instance(
        session,
        org,
        project,
        launched_at=DAY + 10 * H,
        ended_at=DAY + 14 * H,
        price_per_hour="16",  # the contract's 8 x $2, as placement records it
        commitment_id=cid,
        capacity_type="reserved",
    )
    lines = by_id(cost_lines(session, org_id=org, start=DAY, end=DAY + 24 * H))
    # 10:00-12:00 on the contract ($0 here), 12:00-14:00 on demand: 2 h x $40 = $80.
    assert (lines[iid].usd, lines[iid].gpu_hours, lines[iid].price_per_gpu_hour) == (80, 32, 5)
    # The contract charges its 12 h x 8 GPUs x $2 = $192 and was used 2 h x 8 GPUs.
    assert (lines[cid].usd, lines[cid].used_gpu_hours) == (192, 16)
    assert burn_rate(session, org_id=org, now=DAY + 11 * H) == 16  # the contract pays for it
    assert burn_rate(session, org_id=org, now=DAY + 13 * H) == 40  # on demand, the contract over


def test_a_projects_budget_spend_is_what_the_cost_lines_say(session: Session) -> None:
    org, project = new_org(session)
    add_prices(session, DAY - timedelta(days=1), [("r1", "", "t8", "H100", 8, "on-demand", "40")])
    add_testcloud_instance(session, org, project, launched_at=DAY, price_per_hour="16", capacity_type="spot")
    add_prices(session, DAY + 12 * H, [("r1", "r1-a", "t8", "H100", 8, "spot", "8")])
    cid = add_commitment(session, org, starts_at=DAY, ends_at=DAY + 12 * H, gpu_count=8)
    add_testcloud_instance(
        session,
        org,
        project,
        launched_at=DAY + 10 * H,
        ended_at=DAY + 14 * H,
        price_per_hour="16",
        commitment_id=cid,
        capacity_type="reserved",
    )
    now = DAY + 20 * H
    # Requested half an hour ago and not launched yet: counted at its price from creation ($4).
    add_testcloud_instance(
        session, org, project, state="requested", created_at=now - H / 2, price_per_hour="8"
    )
    month = datetime(2026, 11, 1, tzinfo=UTC)
    lines = cost_lines(session, org_id=org, start=month, end=now, project_id=project)
    instances = sum((line.usd for line in lines if line.kind == "instance"), Decimal(0))
    # Spot: 12 h x $16 + 8 h x $8 = $256; past the contract: 2 h x $40 = $80.
    assert instances == 336
    assert spent_this_month(session, project, now) == Decimal("340.000000")
