"""How a CPU computes fmae's floats, and the portable mode (`--reproducible`) in which the same
command gives the same bits on any x86-64 CPU with AVX2, Intel or AMD.

Two libraries choose their code by the CPU they find, and each code path rounds its own way:
MKL (torch's matrix products; on Intel CPUs with AVX-512 it runs AVX-512 kernels, on AMD CPUs
one AVX2 path whatever it is told) and ATen (torch's elementwise and reduction kernels, vectorised
for AVX2 or AVX-512). The thread count changes how sums are split. The portable mode fixes all
three: `MKL_CBWR=AVX2` and `ATEN_CPU_CAPABILITY=avx2`, set in the environment before torch loads
(both are read once, when torch first computes), and one torch thread per training process (a
sweep runs cells side by side with --jobs instead). It is a CPU mode: a GPU rounds its own way.
docs/reproducibility.md says what it costs and what was measured where.

Nothing here imports torch at module level: the mode must be entered before torch loads.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from fmae.errors import ConfigError

PORTABLE = "portable"
DEFAULT = "default"
PORTABLE_ENV = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
X86 = ("x86_64", "AMD64", "amd64", "i686", "i386")
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")  # the ISA extensions a run records


def mode(reproducible: bool) -> str:
    return PORTABLE if reproducible else DEFAULT


def describe(numerics: str) -> str:
    """How progress lines name the mode: "portable numerics, " in it, nothing otherwise."""
    return "portable numerics, " if numerics == PORTABLE else ""


def check(reproducible: bool, threads: int | None, device: str) -> int | None:
    """--threads and --device under --reproducible: one thread per process, on the CPU. Returns the
    threads to use (1 in the mode; else as given)."""
    if not reproducible:
        return threads
    if threads not in (None, 1):
        raise ConfigError(f"--reproducible trains with 1 thread per process, got --threads {threads}",
                          "leave --threads out; a sweep trains cells side by side with --jobs")
    if device not in ("auto", "cpu"):
        raise ConfigError(f"--reproducible is a CPU mode, got --device {device}",
                          "leave --device out or use --device cpu; GPUs round in their own way")
    return 1


def _in_environment() -> bool:
    return all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items())


def enter(numerics: str) -> None:
    """Make this process compute in `numerics` (fmae.numerics.PORTABLE or DEFAULT). For the portable
    mode, the environment is set before torch loads; where torch is loaded already with other
    settings, the mode cannot be had in this process: a ConfigError says so. Once torch is loaded,
    its CPU capability is checked (a CPU without AVX2 cannot run the mode)."""
    if numerics != PORTABLE:
        return
    if "torch" in sys.modules and not _in_environment():
        raise ConfigError("--reproducible must be chosen before torch loads, and this process loaded torch "
                          "with other settings", "run fmae as a command (a new process), or set "
                          + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items()) + " before Python starts")
    os.environ.update(PORTABLE_ENV)


def verify(numerics: str) -> None:
    """In a process that trains, after `enter` and with torch loaded: the portable mode is in effect
    here (ATen's capability is AVX2, MKL was told AVX2), or a ConfigError."""
    if numerics != PORTABLE:
        return
    if not _in_environment():  # MKL reads MKL_CBWR when it loads: set now, it would be too late
        raise ConfigError("--reproducible: this process started torch without the portable settings",
                          "run fmae as a command (a new process)")
    if platform.machine() not in X86:
        return  # aarch64 and others: no MKL, no AVX2; the mode records the machine, its numbers are its own
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        raise ConfigError(f"--reproducible needs an x86-64 CPU with AVX2 and FMA; torch runs {capability} "
                          "kernels here", "leave --reproducible out on this machine")


def cpu_info() -> dict[str, str]:
    """The CPU's model name, vendor and flags, as the operating system tells them ("" where unknown)."""
    info = {"model": "", "vendor": "", "flags": ""}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not info["model"]:
                    info["model"] = value.strip()
                elif key == "vendor_id" and not info["vendor"]:
                    info["vendor"] = value.strip()
                elif key == "flags" and not info["flags"]:
                    info["flags"] = value.strip()
                if all(info.values()):
                    break
    except OSError:
        pass
    if not info["model"]:
        info["model"] = platform.processor() or platform.machine()
    return info


def kernels() -> dict[str, str]:
    """The kernels this process computes with: torch's CPU capability and MKL's mode ("auto" when
    MKL chooses). Torch must be loaded."""
    import torch

    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR", "auto")}


def machine(numerics: str) -> dict[str, Any]:
    """What a run records of the machine's arithmetic (config.json's environment): the CPU model and
    vendor, the architecture, the ISA extensions present, the kernels torch runs, MKL's mode and
    the numerics fmae asked for. Torch must be loaded (it is, in a process that trains)."""
    info = cpu_info()
    present = set(info["flags"].split())
    return {
        "cpu": info["model"],
        "vendor": info["vendor"],
        "arch": platform.machine(),
        "isa": [f for f in FLAGS if f in present],
        **kernels(),
        "numerics": numerics,
    }


def resumable(saved: dict[str, Any] | None, numerics: str, what: str) -> None:
    """A run (or cell) made in one mode resumes in the same mode: a ConfigError names the flag."""
    before = ((saved or {}).get("machine") or {}).get("numerics", DEFAULT)
    if before != numerics:
        raise ConfigError(f"{what} was trained {'with' if before == PORTABLE else 'without'} --reproducible; "
                          "resuming it in the other mode would mix two kinds of arithmetic",
                          f"{'add' if before == PORTABLE else 'leave out'} --reproducible")
