"""The webui's reports that describe this service: the memory of the process that answers
(`/sdapi/v1/memory`), read without torch (the proxy never loads it); the scripts it runs
(`/sdapi/v1/script-info`)."""

from __future__ import annotations

import importlib
import os
from typing import Any

from sdcore.webui.script_info import scripts_info


def _ram() -> dict[str, Any]:
    try:
        psutil = importlib.import_module("psutil")
        process = psutil.Process(os.getpid())
        used = process.memory_info().rss
        total = psutil.virtual_memory().total
    except (ImportError, OSError) as exc:
        try:  # without psutil: the POSIX page counts
            pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            import resource

            used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            total = pages * size
        except (ValueError, OSError, ImportError):
            return {"error": str(exc)}
    return {"free": total - used, "used": used, "total": total}


def _cuda() -> dict[str, Any]:
    """The GPU's memory through NVML when it is importable (never through torch: the proxy
    does not load it); the webui's shape, with what NVML cannot tell left out."""
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 (no NVML library, no driver, no GPU: all read the same)
        return {"error": "unavailable"}
    try:
        info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0))
        system = {"free": int(info.free), "used": int(info.used), "total": int(info.total)}
        return {"system": system}
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}
    finally:
        nvml.nvmlShutdown()


def memory() -> dict[str, dict[str, Any]]:
    """This process's RAM (bytes: free, used, total) and the GPU's, as the webui reports them."""
    return {"ram": _ram(), "cuda": _cuda()}


def scripts() -> list[dict[str, Any]]:
    """The webui scripts this service runs, with their arguments in `script_args` order."""
    return scripts_info()
