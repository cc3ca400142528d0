"""Which policies the simulator can run, by name (pure: no I/O).

To benchmark another policy, add a ``PolicySpec`` to ``EXTRA_POLICIES`` below: it then runs in
every scenario and shows up in every table, next to the baselines and the optimum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from broker.core.deadline import DeadlinePolicy
from broker.core.slack_policy import SlackPricedPolicy
from broker.simulation.baselines import GreedySpot, OnDemandOnly, UniformProgress, UniformProgressFailover

OPTIMUM = "optimum"
OURS = "ours"


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """How to make a policy and what it may see.

    ``factory`` is ``None`` for the offline optimum (searched, not stepped). ``single_venue``
    policies run once per venue of a market and are averaged over venues (Can't Be Late's
    single-region policies, as SkyNomad reports its single-region UP). ``cross_cloud`` policies
    may use venues of other clouds in scenarios that offer them; the others keep to the
    scenario's own cloud.
    """

    name: str
    label: str
    factory: Callable[[], DeadlinePolicy] | None
    single_venue: bool = False
    cross_cloud: bool = False


BASELINES: tuple[PolicySpec, ...] = (
    PolicySpec("on_demand", "On-demand only", OnDemandOnly),
    PolicySpec("greedy_spot", "Greedy spot (1 region)", GreedySpot, single_venue=True),
    PolicySpec("uniform_progress", "UP (1 region)", UniformProgress, single_venue=True),
    PolicySpec("up_s", "UP(S) eager failover", UniformProgressFailover),
    PolicySpec(OPTIMUM, "Optimal (offline DP)", None, cross_cloud=True),
)

# gpubroker's own policy (broker/core/slack_policy.py); add more policies here.
EXTRA_POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec(OURS, "Ours (gpubroker slack-priced)", SlackPricedPolicy, cross_cloud=True),
)


def registry() -> dict[str, PolicySpec]:
    """Every known policy by name, baselines first."""
    return {spec.name: spec for spec in (*BASELINES, *EXTRA_POLICIES)}


def policies_for(defaults: tuple[str, ...], requested: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The policies to run: ``requested`` if given, else a scenario's defaults plus every extra one."""
    known = registry()
    names = requested if requested is not None else (*defaults, *(s.name for s in EXTRA_POLICIES))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; known: {sorted(known)}")
    return tuple(dict.fromkeys(names))
