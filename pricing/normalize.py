"""Normalization of provider and catalog names to gpubroker's vocabulary (pure: no I/O).

Every source names GPUs its own way (SkyPilot's ``H100-SXM`` on RunPod, ``H100-MEGA`` on
GCP, ``H100-80GB`` in the GCP traces). Users ask for a GPU *model*; this module is the one
visible table that maps the names we have met to that model.
"""

from __future__ import annotations

# Source name (upper-cased) -> canonical accelerator. Names not listed map to themselves.
# Variants of one model (form factor, interconnect, memory size that does not change the
# model's class) fold into the model; a different memory size that users select on
# (A100 40 GB vs 80 GB) stays apart, as SkyPilot keeps it.
ACCELERATOR_ALIASES: dict[str, str] = {
    "H100-SXM": "H100",
    "H100-SXM5": "H100",
    "H100-PCIE": "H100",
    "H100-NVL": "H100",
    "H100-MEGA": "H100",
    "H100-80GB": "H100",
    "H100-MEGA-80GB": "H100",
    "H200-SXM": "H200",
    "H200-141GB": "H200",
    "A100-80GB-SXM": "A100-80GB",
    "A100-SXM4-80GB": "A100-80GB",
    "A100-40GB": "A100",
    "B200-SXM": "B200",
}

# Instance types whose catalog accelerator count is wrong. Azure documents
# Standard_ND96isr_H100_v5 as 8x H100 80 GB, but SkyPilot's Azure catalog lists 12.
ACCELERATOR_COUNT_FIXES: dict[tuple[str, str], int] = {
    ("azure", "Standard_ND96isr_H100_v5"): 8,
}


def canonical_accelerator(name: str) -> str:
    """Return the GPU model a source's accelerator name stands for (``H100-SXM`` -> ``H100``)."""
    stripped = name.strip()
    return ACCELERATOR_ALIASES.get(stripped.upper(), stripped)


def accelerator_count(cloud: str, instance_type: str, listed: int) -> int:
    """Return the real GPU count of an instance type, correcting known catalog errors."""
    return ACCELERATOR_COUNT_FIXES.get((cloud, instance_type), listed)
