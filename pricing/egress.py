"""Egress prices: USD per GB to move data between zones, regions and clouds (pure: no I/O).

The placement and workload-migration engines price a move as ``checkpoint size × egress $/GB``;
:func:`egress_per_gb` is total (any strings in, a ``Decimal`` out) so they never fail on a
region this table has not met.

Figures are first-tier list prices (the smallest monthly volume, no free allowance, no
discount), transcribed by hand from the providers' public pricing pages as they stood in
2025 — they were not fetched by this code, so re-check them before relying on a cent:

* AWS — https://aws.amazon.com/ec2/pricing/on-demand/ ("Data Transfer"): same AZ over a private
  IP free; across AZs $0.01/GB charged on *each* side, so $0.02 per GB moved; to another region
  $0.02 from North America and Europe, more from elsewhere (Tokyo $0.09, Sydney $0.098,
  São Paulo $0.138, UAE $0.1105, Cape Town $0.147); AWS prices by the source region, not by
  the destination's continent; to the internet $0.09 (US/EU) up to $0.154 (Cape Town).
* Google Cloud — https://cloud.google.com/vpc/network-pricing: same zone free, across zones of a
  region $0.01; between regions of one continent $0.02 (North America, Europe), $0.05 (Asia),
  $0.08 (elsewhere); between continents $0.05–$0.15 (the table keeps each source's highest);
  internet (Premium tier, first TB) $0.12, to Australia $0.19 — priced by the *destination*.
* Azure — https://azure.microsoft.com/pricing/details/bandwidth/: across availability zones
  free (Microsoft withdrew the announced inter-AZ charge); within a continent $0.02 (North
  America, Europe), $0.08 (Asia, Oceania, Middle East), $0.16 (South America, Africa); between
  continents $0.05 from North America and Europe, $0.08 from Asia, $0.16 from South America
  and Africa; internet (premium routing, after the free 100 GB) $0.087 zone 1, $0.12 zone 2,
  $0.181 zone 3.
* OCI — https://www.oracle.com/cloud/networking/pricing/: first 10 TB a month free (ignored
  here: conservative), then $0.0085 (North America, Europe), $0.025 (Asia-Pacific, South
  America), $0.05 (Middle East, Africa); inter-region traffic is billed as outbound transfer.
* Neoclouds: Lambda (https://lambda.ai/pricing: "no egress fees") and RunPod
  (https://www.runpod.io/pricing: "zero fees for ingress/egress") are free. Shadeform is a
  marketplace that adds no transfer fee and whose providers mostly bill none: free. Vast.ai
  hosts set their own bandwidth price (shown per listing, $/TB); without a listing this table
  assumes $0.02/GB, at the high end of typical host rates. DigitalOcean bills transfer beyond
  the droplet allowance at $0.01/GB (https://www.digitalocean.com/pricing/droplets).

Documented defaults (conservative: they over- rather than under-price a move):

* A region this table cannot place on a continent is priced at its cloud's highest figure
  for the path; a cloud not in the table at :data:`UNKNOWN_CLOUD_EGRESS_PER_GB` for any path
  but the same zone.
* Two places in one region whose zones are not both known and equal are priced as crossing
  zones.
* Leaving a cloud for another is the source cloud's internet egress; ingress is free everywhere.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

_ZERO = Decimal(0)

# The highest common first-tier internet egress of the hyperscalers (GCP Premium, NA/EU).
UNKNOWN_CLOUD_EGRESS_PER_GB = Decimal("0.12")


class EgressPath(enum.StrEnum):
    """How far data travels between two places, which decides how it is billed."""

    SAME_ZONE = "same-zone"
    CROSS_ZONE = "cross-zone"
    CROSS_REGION = "cross-region"  # same cloud, same continent
    CROSS_CONTINENT = "cross-continent"  # same cloud
    CROSS_CLOUD = "cross-cloud"  # the source cloud's internet egress


NORTH_AMERICA = "north-america"
SOUTH_AMERICA = "south-america"
EUROPE = "europe"
ASIA = "asia"
OCEANIA = "oceania"
MIDDLE_EAST = "middle-east"
AFRICA = "africa"
CONTINENTS = (NORTH_AMERICA, SOUTH_AMERICA, EUROPE, ASIA, OCEANIA, MIDDLE_EAST, AFRICA)


def _d(table: Mapping[str, str]) -> Mapping[str, Decimal]:
    return MappingProxyType({k: Decimal(v) for k, v in table.items()})


@dataclass(frozen=True, slots=True)
class CloudEgress:
    """One cloud's egress list prices, USD per GB, keyed by continent.

    ``cross_region`` and ``cross_continent`` are keyed by the source's continent; ``internet``
    by the source's, or the destination's when ``internet_by_destination`` (GCP bills so).
    A continent missing from a table is priced at the table's highest figure.
    """

    cross_zone: Decimal
    cross_region: Mapping[str, Decimal]
    cross_continent: Mapping[str, Decimal]
    internet: Mapping[str, Decimal]
    internet_by_destination: bool = False

    @staticmethod
    def free() -> CloudEgress:
        none: Mapping[str, Decimal] = MappingProxyType({})
        return CloudEgress(_ZERO, none, none, none)

    @staticmethod
    def flat(per_gb: str) -> CloudEgress:
        """One price for every path that leaves a zone (marketplaces with host-set rates)."""
        price = Decimal(per_gb)
        table = MappingProxyType({c: price for c in CONTINENTS})
        return CloudEgress(price, table, table, table)


def _at(table: Mapping[str, Decimal], continent: str | None) -> Decimal:
    if continent is not None and continent in table:
        return table[continent]
    return max(table.values(), default=_ZERO)


# AWS prices transfer to another region by the source region, whichever continent it goes to.
_AWS_INTER_REGION = _d(
    {NORTH_AMERICA: "0.02", EUROPE: "0.02", ASIA: "0.09", OCEANIA: "0.098",
     SOUTH_AMERICA: "0.138", MIDDLE_EAST: "0.1105", AFRICA: "0.147"}
)
# OCI bills inter-region traffic as outbound transfer, priced by the source's area.
_OCI_OUTBOUND = _d(
    {NORTH_AMERICA: "0.0085", EUROPE: "0.0085", ASIA: "0.025", OCEANIA: "0.025",
     SOUTH_AMERICA: "0.025", MIDDLE_EAST: "0.05", AFRICA: "0.05"}
)

EGRESS: Mapping[str, CloudEgress] = MappingProxyType(
    {
        "aws": CloudEgress(
            cross_zone=Decimal("0.02"),
            cross_region=_AWS_INTER_REGION,
            cross_continent=_AWS_INTER_REGION,
            internet=_d(
                {NORTH_AMERICA: "0.09", EUROPE: "0.09", ASIA: "0.12", OCEANIA: "0.114",
                 SOUTH_AMERICA: "0.15", MIDDLE_EAST: "0.117", AFRICA: "0.154"}
            ),
        ),
        "gcp": CloudEgress(
            cross_zone=Decimal("0.01"),
            cross_region=_d(
                {NORTH_AMERICA: "0.02", EUROPE: "0.02", ASIA: "0.05", OCEANIA: "0.08",
                 SOUTH_AMERICA: "0.08", MIDDLE_EAST: "0.08", AFRICA: "0.08"}
            ),
            cross_continent=_d(
                {NORTH_AMERICA: "0.08", EUROPE: "0.08", ASIA: "0.08", OCEANIA: "0.15",
                 SOUTH_AMERICA: "0.14", MIDDLE_EAST: "0.11", AFRICA: "0.14"}
            ),
            internet=_d(
                {NORTH_AMERICA: "0.12", EUROPE: "0.12", ASIA: "0.12", OCEANIA: "0.19",
                 SOUTH_AMERICA: "0.12", MIDDLE_EAST: "0.12", AFRICA: "0.12"}
            ),
            internet_by_destination=True,
        ),
        "azure": CloudEgress(
            cross_zone=_ZERO,
            cross_region=_d(
                {NORTH_AMERICA: "0.02", EUROPE: "0.02", ASIA: "0.08", OCEANIA: "0.08",
                 MIDDLE_EAST: "0.08", SOUTH_AMERICA: "0.16", AFRICA: "0.16"}
            ),
            cross_continent=_d(
                {NORTH_AMERICA: "0.05", EUROPE: "0.05", ASIA: "0.08", OCEANIA: "0.08",
                 MIDDLE_EAST: "0.08", SOUTH_AMERICA: "0.16", AFRICA: "0.16"}
            ),
            internet=_d(
                {NORTH_AMERICA: "0.087", EUROPE: "0.087", ASIA: "0.12", OCEANIA: "0.12",
                 SOUTH_AMERICA: "0.181", MIDDLE_EAST: "0.181", AFRICA: "0.181"}
            ),
        ),
        "oci": CloudEgress(
            cross_zone=_ZERO,
            cross_region=_OCI_OUTBOUND,
            cross_continent=_OCI_OUTBOUND,
            internet=_OCI_OUTBOUND,
        ),
        "lambda": CloudEgress.free(),
        "runpod": CloudEgress.free(),
        "shadeform": CloudEgress.free(),
        "vast": CloudEgress.flat("0.02"),
        "do": CloudEgress.flat("0.01"),
    }
)

_UNKNOWN_CLOUD = CloudEgress.flat(str(UNKNOWN_CLOUD_EGRESS_PER_GB))

# First token of a region name (``us-east-1``, ``europe-west4``, ``ap-tokyo-1``) -> continent.
_PREFIXES: Mapping[str, str] = MappingProxyType(
    {
        "us": NORTH_AMERICA, "ca": NORTH_AMERICA, "northamerica": NORTH_AMERICA, "mx": NORTH_AMERICA,
        "eu": EUROPE, "europe": EUROPE, "uk": EUROPE, "no": EUROPE, "se": EUROPE,
        "ap": ASIA, "asia": ASIA,
        "australia": OCEANIA,
        "sa": SOUTH_AMERICA, "southamerica": SOUTH_AMERICA,
        "me": MIDDLE_EAST, "il": MIDDLE_EAST,
        "af": AFRICA, "africa": AFRICA,
    }
)

# Region names that break the prefix rule: AWS and OCI list Australia and New Zealand under "ap".
_OCEANIA_WORDS = ("sydney", "melbourne", "auckland", "newzealand", "australia")
_AWS_OCEANIA = frozenset({"ap-southeast-2", "ap-southeast-4", "ap-southeast-6"})

# Bare ISO country codes (RunPod, Vast) and country/place words (Fluidstack, Azure names).
_COUNTRIES: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(("us", "usa", "ca", "canada", "mx", "mexico"), NORTH_AMERICA),
        **dict.fromkeys(("br", "brazil", "cl", "chile", "co", "ar"), SOUTH_AMERICA),
        **dict.fromkeys(
            ("gb", "uk", "de", "germany", "fr", "france", "nl", "netherlands", "se", "sweden", "no",
             "norway", "fi", "finland", "is", "iceland", "ie", "ireland", "it", "italy", "es", "spain",
             "pt", "pl", "poland", "cz", "ro", "bg", "hr", "hu", "si", "sk", "at", "austria", "ch",
             "switzerland", "be", "belgium", "dk", "denmark", "ee", "lv", "lt", "gr", "greece", "ua",
             "rs", "europe"),
            EUROPE,
        ),
        **dict.fromkeys(
            ("jp", "japan", "kr", "korea", "cn", "hk", "tw", "taiwan", "sg", "singapore", "in",
             "india", "th", "vn", "id", "indonesia", "my", "malaysia", "ph", "asia"),
            ASIA,
        ),
        **dict.fromkeys(("au", "nz", "australia", "newzealand"), OCEANIA),
        **dict.fromkeys(("ae", "uae", "qa", "qatar", "il", "israel", "sa", "saudi", "tr"), MIDDLE_EAST),
        **dict.fromkeys(("za", "southafrica", "ke", "ng", "eg", "ma"), AFRICA),
    }
)

# Azure region names have no separators (``westeurope``, ``japaneast``): match words inside.
# Order matters: ``southafricanorth`` must not match "north"-something first, and the
# North-American ``...us``, ``...us2`` suffix is tried last.
_AZURE_WORDS: tuple[tuple[str, str], ...] = (
    ("australia", OCEANIA), ("newzealand", OCEANIA),
    ("brazil", SOUTH_AMERICA), ("chile", SOUTH_AMERICA),
    ("southafrica", AFRICA),
    ("uae", MIDDLE_EAST), ("qatar", MIDDLE_EAST), ("israel", MIDDLE_EAST), ("saudi", MIDDLE_EAST),
    ("europe", EUROPE), ("uk", EUROPE), ("france", EUROPE), ("germany", EUROPE), ("sweden", EUROPE),
    ("norway", EUROPE), ("switzerland", EUROPE), ("poland", EUROPE), ("italy", EUROPE),
    ("spain", EUROPE), ("austria", EUROPE), ("belgium", EUROPE), ("denmark", EUROPE),
    ("finland", EUROPE), ("greece", EUROPE),
    ("asia", ASIA), ("japan", ASIA), ("korea", ASIA), ("india", ASIA), ("indonesia", ASIA),
    ("malaysia", ASIA), ("taiwan", ASIA), ("singapore", ASIA),
    ("canada", NORTH_AMERICA), ("mexico", NORTH_AMERICA),
)
_AZURE_US = re.compile(r"us\d*$")
_SEPARATORS = re.compile(r"[-_\s()/]+")


def continent_of(cloud: str, region: str) -> str | None:
    """The continent a region is on, from its name; ``None`` when the name does not say."""
    name = region.strip().casefold()
    if not name:
        return None
    if cloud.strip().casefold() == "aws" and name in _AWS_OCEANIA:
        return OCEANIA
    if any(word in name for word in _OCEANIA_WORDS):
        return OCEANIA
    tokens = [t for t in _SEPARATORS.split(name) if t]
    if len(tokens) == 1 and tokens[0] in _COUNTRIES:
        return _COUNTRIES[tokens[0]]
    if len(tokens) > 1 and tokens[0] in _PREFIXES:
        return _PREFIXES[tokens[0]]
    for token in tokens:
        if len(token) > 2 and token in _COUNTRIES:
            return _COUNTRIES[token]
    for word, continent in _AZURE_WORDS:
        if word in name:
            return continent
    if _AZURE_US.search(name):
        return NORTH_AMERICA
    return None


def egress_path(
    src_cloud: str,
    src_region: str,
    dst_cloud: str,
    dst_region: str,
    src_zone: str | None = None,
    dst_zone: str | None = None,
) -> EgressPath:
    """How data travels from one place to another (names compared case-insensitively)."""
    if src_cloud.strip().casefold() != dst_cloud.strip().casefold():
        return EgressPath.CROSS_CLOUD
    if src_region.strip().casefold() == dst_region.strip().casefold():
        if src_zone and dst_zone and src_zone.strip().casefold() == dst_zone.strip().casefold():
            return EgressPath.SAME_ZONE
        return EgressPath.CROSS_ZONE
    src = continent_of(src_cloud, src_region)
    dst = continent_of(dst_cloud, dst_region)
    if src is not None and src == dst:
        return EgressPath.CROSS_REGION
    return EgressPath.CROSS_CONTINENT


def egress_per_gb(
    src_cloud: str,
    src_region: str,
    dst_cloud: str,
    dst_region: str,
    src_zone: str | None = None,
    dst_zone: str | None = None,
) -> Decimal:
    """USD per GB to move data from one place to another; total (see the module docstring)."""
    path = egress_path(src_cloud, src_region, dst_cloud, dst_region, src_zone, dst_zone)
    if path is EgressPath.SAME_ZONE:
        return _ZERO
    prices = EGRESS.get(src_cloud.strip().casefold(), _UNKNOWN_CLOUD)
    if path is EgressPath.CROSS_ZONE:
        return prices.cross_zone
    src = continent_of(src_cloud, src_region)
    if path is EgressPath.CROSS_REGION:
        return _at(prices.cross_region, src)
    if path is EgressPath.CROSS_CONTINENT:
        return _at(prices.cross_continent, src)
    where = continent_of(dst_cloud, dst_region) if prices.internet_by_destination else src
    return _at(prices.internet, where)


__all__ = [
    "EGRESS",
    "UNKNOWN_CLOUD_EGRESS_PER_GB",
    "CloudEgress",
    "EgressPath",
    "continent_of",
    "egress_path",
    "egress_per_gb",
]
