"""Provider registry: which adapters exist, which are configured, wrapped in the resilience layer (I/O).

Adapters are imported lazily, by name, so a user without the Azure SDK can still run AWS (Libcloud's
``providers.py`` is the model). Each adapter module has ``from_environment()``, which builds the
adapter from that provider's standard credential chain or returns None when it is not configured.

Which providers are used: ``GPUBROKER_PROVIDERS`` (comma-separated names) when set; otherwise every
configured real provider, and the simulated cloud when none is configured.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from broker.core.errors import ProviderError
from broker.core.ports import Provider
from providers.resilience import ResiliencePolicy, ResilientProvider

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    name: str
    module: str
    extra: str | None  # the pip extra that installs its SDK
    credentials: str  # where it looks for credentials, for humans
    # Signs that the provider is configured: environment variables, then files (``~`` expanded).
    # Without one, the adapter is not even imported, so no SDK credential chain runs and nothing
    # probes a cloud metadata endpoint on a laptop. Empty: always configured.
    signal_env: tuple[str, ...] = ()
    signal_files: tuple[str, ...] = ()

    def looks_configured(self, environ: Mapping[str, str]) -> bool:
        if not self.signal_env and not self.signal_files:
            return True
        if any(environ.get(name) for name in self.signal_env):
            return True
        return any(Path(path).expanduser().exists() for path in self.signal_files)


ADAPTERS: tuple[AdapterInfo, ...] = (
    AdapterInfo(
        "aws",
        "providers.aws",
        "aws",
        "AWS credential chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, role)",
        # An EC2 instance role is only used when asked for: probing the metadata endpoint
        # from a machine that is not on EC2 costs seconds and talks to a link-local address.
        signal_env=(
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "GPUBROKER_AWS_USE_INSTANCE_ROLE",
        ),
        signal_files=("~/.aws/credentials", "~/.aws/config"),
    ),
    AdapterInfo(
        "gcp",
        "providers.gcp",
        "gcp",
        "GOOGLE_APPLICATION_CREDENTIALS or gcloud ADC",
        signal_env=("GOOGLE_APPLICATION_CREDENTIALS", "GPUBROKER_GCP_PROJECT"),
        signal_files=("~/.config/gcloud/application_default_credentials.json",),
    ),
    AdapterInfo(
        "azure",
        "providers.azure",
        "azure",
        "AZURE_SUBSCRIPTION_ID + DefaultAzureCredential",
        signal_env=("AZURE_SUBSCRIPTION_ID",),
    ),
    AdapterInfo("lambda", "providers.lambda_cloud", None, "LAMBDA_API_KEY", signal_env=("LAMBDA_API_KEY",)),
    AdapterInfo("runpod", "providers.runpod", None, "RUNPOD_API_KEY", signal_env=("RUNPOD_API_KEY",)),
    AdapterInfo(
        "shadeform", "providers.shadeform", None, "SHADEFORM_API_KEY", signal_env=("SHADEFORM_API_KEY",)
    ),
    AdapterInfo("vast", "providers.vast", None, "VAST_API_KEY", signal_env=("VAST_API_KEY",)),
    AdapterInfo(
        "kubernetes",
        "providers.kubernetes",
        "kubernetes",
        "GPUBROKER_KUBE_PRICES + kubeconfig",
        signal_env=("GPUBROKER_KUBE_PRICES",),
    ),
    AdapterInfo("sim", "providers.sim", None, "none: the simulated cloud (GPUBROKER_SIM_*)"),
)
BY_NAME = {info.name: info for info in ADAPTERS}
SIM = "sim"


class AdapterUnavailable(RuntimeError):
    """An adapter cannot be loaded here (its SDK is not installed); the message says how to fix it."""


@dataclass
class ProviderEntry:
    """One known provider: whether it is configured, and the wrapped adapter when it is."""

    info: AdapterInfo
    provider: ResilientProvider | None
    problem: str | None = None

    @property
    def configured(self) -> bool:
        return self.provider is not None


def load_module(name: str) -> ModuleType:
    info = BY_NAME.get(name)
    if info is None:
        raise AdapterUnavailable(f"unknown provider {name!r}; known: {', '.join(BY_NAME)}")
    try:
        return importlib.import_module(info.module)
    except ImportError as exc:
        if exc.name == info.module:
            raise AdapterUnavailable(f"the {name} adapter is not part of this gpubroker build") from exc
        hint = f": pip install 'gpubroker[{info.extra}]'" if info.extra else ""
        raise AdapterUnavailable(f"{name} needs {exc.name}, which is not installed{hint}") from exc


def _build(info: AdapterInfo, policy: ResiliencePolicy | None) -> ProviderEntry:
    if not info.looks_configured(os.environ):
        return ProviderEntry(info, None, f"not configured ({info.credentials})")
    try:
        adapter: Provider | None = load_module(info.name).from_environment()
    except AdapterUnavailable as exc:
        return ProviderEntry(info, None, str(exc))
    except (ProviderError, ValueError, OSError) as exc:  # configured, but wrongly: say so, don't crash
        return ProviderEntry(info, None, f"misconfigured: {exc}")
    if adapter is None:
        return ProviderEntry(info, None, f"not configured ({info.credentials})")
    return ProviderEntry(info, ResilientProvider(adapter, policy))


def discover(policy: ResiliencePolicy | None = None) -> list[ProviderEntry]:
    """Every known provider, configured or not, in registry order; used ones are wrapped and ready.

    Reads the environment (adapters read their own credential variables)."""
    chosen = [n.strip().lower() for n in os.environ.get("GPUBROKER_PROVIDERS", "").split(",") if n.strip()]
    unknown = [n for n in chosen if n not in BY_NAME]
    if unknown:
        raise AdapterUnavailable(
            f"GPUBROKER_PROVIDERS names unknown providers {unknown}; known: {', '.join(BY_NAME)}"
        )
    entries: list[ProviderEntry] = []
    for info in ADAPTERS:
        if info.name == SIM:
            continue
        if chosen and info.name not in chosen:
            entries.append(ProviderEntry(info, None, "not selected (GPUBROKER_PROVIDERS)"))
            continue
        entries.append(_build(info, policy))
    real_configured = any(e.configured for e in entries)
    if (chosen and SIM in chosen) or (not chosen and not real_configured):
        entries.append(_build(BY_NAME[SIM], policy))
    else:
        reason = "not selected (GPUBROKER_PROVIDERS)" if chosen else "a real provider is configured"
        entries.append(ProviderEntry(BY_NAME[SIM], None, reason))
    return entries


def active(entries: list[ProviderEntry]) -> list[ResilientProvider]:
    return [e.provider for e in entries if e.provider is not None]
