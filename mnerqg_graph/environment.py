"""What a run ran on: library versions, CPU kernels and threads, recorded beside its figures.

The same seed and config can give different F1 on two machines (other CPU kernels, other library
builds), so every recorded figure carries this; comparing two records then says what differed.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import torch

#: the distributions whose versions change numbers (kernels, tokenisation, graph ops, metrics)
PACKAGES = ("torch", "transformers", "tokenizers", "torch_geometric", "numpy", "torchvision")


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names (and devices) as given."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str | torch.device | None = None) -> dict[str, Any]:
    """The software and machine a run used, as a flat JSON-able dict.

    Args:
        device: the device the run trained on, recorded as given (``None``: not recorded).

    Returns:
        ``python``, each of :data:`PACKAGES` present (``None`` when absent), ``cpu`` (model name),
        ``cpu_capability`` (the vector kernels torch dispatches to, e.g. ``AVX512``), ``cpu_count``,
        ``torch_threads``, ``cuda`` (the CUDA torch was built with, or ``None``) and, with a CUDA
        device, ``gpu`` (its name).
    """
    out: dict[str, Any] = {"python": platform.python_version()}
    out.update({p: _version(p) for p in PACKAGES})
    out["cpu"] = _cpu_model()
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    out["cpu_count"] = os.cpu_count()
    out["torch_threads"] = torch.get_num_threads()
    out["cuda"] = torch.version.cuda
    if device is not None:
        out["device"] = str(device)
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(dev)
    return out


def describe(env: dict[str, Any]) -> str:
    """One line for logs and reports.

    E.g. ``python 3.11.9, torch 2.14.1 (AVX512, 2 threads), transformers 5.24.0, ...; AMD EPYC x2``.
    """
    libs = ", ".join(f"{p} {env[p]}" for p in PACKAGES if p != "torch" and env.get(p) is not None)
    kernels = f"{env.get('cpu_capability')}, {env.get('torch_threads')} threads"
    torch_part = f"torch {env.get('torch')} ({kernels})"
    where = env.get("gpu") or f"{env.get('cpu')} x{env.get('cpu_count')}"
    return f"python {env.get('python')}, {torch_part}, {libs}; {where}"
