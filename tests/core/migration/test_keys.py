"""Idempotency keys: same inputs, same plan and keys; a new generation or offer, new keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from broker.core.migration import (
    LaunchRefused,
    Preempted,
    PreemptionNotice,
    Rebalance,
    decide,
    launch_key,
    migration_plan,
)
from broker.core.types import CapacityType
from tests.core.migration.builders import NOW, POLICY, replacement, running, workload


def keys(plan_commands: tuple) -> list[str]:
    return [c.idempotency_key for c in plan_commands]


def test_same_inputs_give_the_same_decision_and_keys():
    r, cands = running(), [replacement("30"), replacement("20", cloud="lambda")]
    first = decide(Rebalance(at=NOW), r, cands, POLICY, NOW)
    again = decide(Rebalance(at=NOW), r, cands, POLICY, NOW)
    assert first == again and first.migrates


def test_replaying_a_handled_event_in_the_same_generation_gives_the_same_keys():
    r = running(capacity_type=CapacityType.SPOT, workload=workload(nodes=2), instance_ids=("i-1", "i-2"))
    notice = PreemptionNotice("i-1", at=NOW, reclaim_at=NOW + timedelta(minutes=2))
    first = decide(notice, r, [replacement("30")], POLICY, NOW)
    # A replay a few seconds later: the wait is shorter, but every key is the same, so the
    # executor dedupes the whole plan.
    replay = decide(notice, r, [replacement("30")], POLICY, NOW + timedelta(seconds=5))
    assert keys(first.plan.commands) == keys(replay.plan.commands)
    # The hard preemption that follows, same generation and target: Launch, CutOver and the
    # Terminates dedupe against the notice's plan.
    hard = decide(Preempted("i-1", at=NOW + timedelta(minutes=2)), r, [replacement("30")], POLICY, NOW)
    assert set(keys(hard.plan.commands)) <= set(keys(first.plan.commands))


def test_a_new_generation_gives_all_new_keys():
    r = running()
    first = decide(Rebalance(at=NOW), r, [replacement("30")], POLICY, NOW)
    next_generation = replace(r, generation=r.generation + 1)
    later = decide(Rebalance(at=NOW), next_generation, [replacement("30")], POLICY, NOW)
    assert not set(keys(first.plan.commands)) & set(keys(later.plan.commands))


def test_keys_are_distinct_within_a_plan_and_valid_instance_ids():
    r = running(workload=workload(nodes=4), instance_ids=("i-1", "i-2", "i-3", "i-4"))
    plan = migration_plan(r, replacement("30"), "test", 900)
    ks = keys(plan.commands)
    assert len(ks) == len(set(ks)) == 7
    assert all(k[0] == "c" and k.isalnum() and k.islower() for k in ks)


def test_launch_key_names_the_offer_and_the_commitment():
    a = replacement("30")
    assert launch_key("w1", 1, a) == launch_key("w1", 1, replace(a, price_per_hour=a.price_per_hour + 1))
    assert launch_key("w1", 1, a) != launch_key("w1", 1, replace(a, zone="us-central1-b"))
    assert launch_key("w1", 1, a) != launch_key("w1", 1, replace(a, commitment_id="cb-1"))
    assert launch_key("w1", 1, a) != launch_key("w2", 1, a)


def test_a_refused_key_is_never_reused_for_another_offer():
    first, second = replacement("30"), replacement("31", cloud="lambda")
    r = running(lost_at=NOW)
    refused = LaunchRefused(launch_key("w1", r.generation, first), first.key, at=NOW)
    d = decide(refused, r, [first, second], POLICY, NOW)
    assert d.target == second
    assert launch_key("w1", r.generation, first) not in keys(d.plan.commands)
