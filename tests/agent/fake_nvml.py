"""A fake of the pynvml module: scripted GPUs behind the NVML functions the agent calls (no I/O).

Errors are the real ``pynvml`` exception classes, so the agent's error mapping is tested
against what the real binding raises.
"""

# ruff: noqa: N802  (the function names are pynvml's)

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml

MIB = 1024 * 1024


@dataclass
class FakeGpu:
    """One GPU. ``power_mw=None`` makes power unsupported; ``util_error`` makes utilization fail.

    Memory is as NVML reports it: ``memory_used_mib`` is what programs hold, and the driver
    reserves ``memory_reserved_mib`` more (480 MiB on the real H100 the agent was run on). v1 of
    nvmlDeviceGetMemoryInfo counts the reserve as used; v2 reports it apart. ``memory_v2=False``
    is a driver without v2 (nvmlDeviceGetMemoryInfo_v2 not found)."""

    name: str = "NVIDIA H100 80GB HBM3"
    util: int = 0
    memory_used_mib: int = 0
    memory_total_mib: int = 81_559
    memory_reserved_mib: int = 0
    memory_v2: bool = True
    power_mw: int | None = 70_000
    memory_supported: bool = True
    util_error: type[pynvml.NVMLError] | None = None


@dataclass
class FakeNvml:
    """Module-like: ``FakeNvml(gpus=[...])`` stands in for ``pynvml``; ``init_error`` fails ``nvmlInit``."""

    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: type[pynvml.NVMLError] | None = None
    calls: list[str] = field(default_factory=list)  # init and shutdown, in order
    memory_calls: list[str] = field(default_factory=list)  # "v1" or "v2", one per memory reading
    initialized: bool = False

    # The real exception classes, reachable as module attributes like in pynvml.
    NVMLError = pynvml.NVMLError
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = pynvml.NVMLError_DriverNotLoaded
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVMLError_Uninitialized = pynvml.NVMLError_Uninitialized
    NVMLError_FunctionNotFound = pynvml.NVMLError_FunctionNotFound
    NVMLError_ArgumentVersionMismatch = pynvml.NVMLError_ArgumentVersionMismatch
    nvmlMemory_v2 = pynvml.nvmlMemory_v2  # noqa: N815 (pynvml's name)

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise self.init_error()
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")
        self._check()
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError_InvalidArgument()
        return index  # the real handle is an opaque pointer; an index serves

    def nvmlDeviceGetName(self, handle: int) -> str:
        self._check()
        return self.gpus[handle].name

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        self._check()
        gpu = self.gpus[handle]
        if gpu.util_error is not None:
            raise gpu.util_error()
        return SimpleNamespace(gpu=gpu.util, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> SimpleNamespace:
        self._check()
        gpu = self.gpus[handle]
        self.memory_calls.append("v2" if version else "v1")
        if version and not gpu.memory_v2:
            raise pynvml.NVMLError_FunctionNotFound()
        if version and version != pynvml.nvmlMemory_v2:
            raise pynvml.NVMLError_ArgumentVersionMismatch()
        if not gpu.memory_supported:
            raise pynvml.NVMLError_NotSupported()
        used, reserved = gpu.memory_used_mib * MIB, gpu.memory_reserved_mib * MIB
        total = gpu.memory_total_mib * MIB
        if version:
            return SimpleNamespace(total=total, reserved=reserved, used=used, free=total - reserved - used)
        return SimpleNamespace(total=total, used=used + reserved, free=total - used - reserved)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self._check()
        gpu = self.gpus[handle]
        if gpu.power_mw is None:
            raise pynvml.NVMLError_NotSupported()
        return gpu.power_mw

    def _check(self) -> None:
        if not self.initialized:
            raise pynvml.NVMLError_Uninitialized()
