"""What this machine is, for the last bits of a float computation, and how gclib's CPU threads share it.

``fingerprint()`` names what decides the rounding of a training run on the CPU: the processor (vendor, model, family
and the instruction sets torch, MKL and oneDNN dispatch to), the torch build with its BLAS, LAPACK and oneDNN, numpy,
and the environment variables that change those libraries' kernels. Two machines with the same fingerprint train the
same bits (on the same number of threads); two with different ones may differ in the last bits, which training then
amplifies. The pinned training tests compare absolute digests only where the fingerprint is the recording one.

``share_cpus()`` sets gclib's default CPU threading before torch loads its OpenMP runtime (``gclib/__init__.py`` calls
it first): OpenMP threads that sleep when they wait (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning for a while,
because a thread that spins on a busy machine takes the core from the thread it waits for. A setting the user made
(any ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME``) is left as it is.

``gclib_threads()`` is the number of torch threads gclib's training runs on on the CPU (``train`` and
``train_stack``, the caller's count put back afterwards): the user's choice where there is one (``GCLIB_THREADS``,
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` or a ``torch.set_num_threads`` call), otherwise half the usable CPUs, at least
one (``default_threads``). A training step is many small operations, and threads that work in lock-step wait at every
one for the slowest of them: beside other busy processes one of them is always descheduled, and a 2-thread run on 2
cores beside 2 busy processes took 2.3-4.4x its idle time against 1.5x for one thread, which was as fast idle
(benchmarks/thread_share.py, results/bench/README.md). Half the CPUs leaves room for as many other busy processes and
is the physical core count on 2-way SMT machines (what torch itself picks there). Everything else (evaluation,
sampling, the notebooks' large batched measurements) keeps torch's count: one thread for everything made
ct_cd_gap's notebook 677 s instead of 423 s on an idle 2-core machine (how its long operations share a busy one is
not measured). The
thread count is part of what a run's last bits depend on (more threads sum in another order), so it is never chosen
from the momentary load.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys

# Instruction sets that decide which kernels torch (ATen's CPU capability), MKL and oneDNN run, and so the last bits of
# float32 arithmetic: FMA against separate multiply-add, the vector width, bf16/fp16 dot products, AMX tiles.
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd",
                "sve", "sve2", "bf16", "i8mm")
# Environment variables that change the kernels of those libraries on the same processor.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "MKL_DEBUG_CPU_TYPE", "ONEDNN_MAX_CPU_ISA",
              "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE", "TORCH_MKLDNN_MATMUL_MIN_DIM")
# OpenMP waiting set by the user: any of these keeps gclib's default away.
WAIT_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Thread counts set by the user: any of these is honoured (GCLIB_THREADS sets gclib's own CPU work only).
THREAD_ENV = ("GCLIB_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_info(cpuinfo: str | None = None) -> dict:
    """vendor, model name, family/model numbers and flags of the first processor in /proc/cpuinfo (``cpuinfo``: its
    text, for tests); elsewhere what ``platform`` says, with no flags."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break            # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = fields.get("flags") or fields.get("features") or ""
    return {"vendor": fields.get("vendor_id") or fields.get("cpu implementer") or platform.machine(),
            "model_name": fields.get("model name") or platform.processor() or platform.machine(),
            "family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
            "flags": sorted(set(flags.split()))}


def _library_lines(config: str) -> list[str]:
    """The lines of ``torch.__config__.show()`` that name a math library and its version (MKL, oneDNN, OpenMP,
    LAPACK, NNPACK, OpenBLAS); the long build-settings line is left to ``torch_build_sha256``."""
    keys = ("Math Kernel Library", "MKL-DNN", "oneDNN", "OpenMP", "LAPACK", "NNPACK", "OpenBLAS")
    lines = (line.strip(" -") for line in config.splitlines())
    return [line for line in lines if any(k in line for k in keys) and not line.startswith("Build settings")]


def fingerprint(cpuinfo: str | None = None, environ=None) -> dict:
    """The platform of this process, as a flat dict of strings: equal dicts train equal bits on the same thread
    count. ``cpuinfo`` and ``environ`` replace /proc/cpuinfo and os.environ (for tests)."""
    import numpy
    import torch
    environ = os.environ if environ is None else environ
    cpu = cpu_info(cpuinfo)
    config = torch.__config__.show()
    return {
        "machine": platform.machine(),
        "cpu_vendor": cpu["vendor"],
        "cpu_model": cpu["model_name"],
        "cpu_family_model": cpu["family_model"],
        "cpu_kernel_flags": " ".join(f for f in KERNEL_FLAGS if f in cpu["flags"]),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_libraries": "; ".join(_library_lines(config)),
        "torch_build_sha256": hashlib.sha256(config.encode()).hexdigest()[:16],
        "numpy": numpy.__version__,
        "python": ".".join(map(str, sys.version_info[:2])),
        "libc": " ".join(platform.libc_ver()),
        "kernel_env": " ".join(f"{k}={environ[k]}" for k in KERNEL_ENV if environ.get(k)),
    }


def fingerprint_differences(recorded: dict, here: dict) -> list[str]:
    """'key: recorded -> here' for every entry that differs (missing entries count as differing); empty when the
    platforms are the same."""
    keys = list(recorded) + [k for k in here if k not in recorded]
    return [f"{k}: {recorded.get(k, '(absent)')!r} -> {here.get(k, '(absent)')!r}" for k in keys
            if recorded.get(k) != here.get(k)]


def share_cpus(environ=None) -> dict:
    """gclib's default CPU threading, applied to ``environ`` (os.environ) unless the user chose: OpenMP threads wait
    passively (``OMP_WAIT_POLICY=PASSIVE``). Must run before torch is imported to act on this process (libgomp and
    Intel's OpenMP read it when they load); processes started from this one (notebook kernels, sweep workers)
    inherit it either way. Returns what it set ({} when the user had set one of ``WAIT_ENV``)."""
    environ = os.environ if environ is None else environ
    if any(k in environ for k in WAIT_ENV):
        return {}
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return {"OMP_WAIT_POLICY": "PASSIVE"}


# torch's thread count when gclib was imported (gclib/__init__.py records it once torch is loaded): a different count
# later means the user called torch.set_num_threads.
_threads_at_import: int | None = None


def note_torch_threads() -> None:
    """Record torch's thread count at ``import gclib`` (called once, after gclib's modules loaded torch)."""
    global _threads_at_import
    import torch
    if _threads_at_import is None:
        _threads_at_import = torch.get_num_threads()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(cpus: int | None = None) -> int:
    """gclib's default torch thread count on ``cpus`` usable CPUs (this process's): half of them, at least one."""
    return max(1, (usable_cpus() if cpus is None else int(cpus)) // 2)


def gclib_threads(environ=None) -> int | None:
    """The torch thread count gclib's CPU training should run on, or None where the user chose one that torch already
    follows (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, or a ``torch.set_num_threads`` call: torch's count is not what
    it was at ``import gclib``, or was not its plain default, one per usable CPU, then). ``GCLIB_THREADS`` (a positive
    integer) is gclib's own; a bad value is one ValueError naming it. Otherwise ``default_threads()``."""
    environ = os.environ if environ is None else environ
    raw = environ.get("GCLIB_THREADS")
    if raw is not None:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"GCLIB_THREADS={raw!r} is not valid; it must be a positive integer (torch threads)")
        return n
    if any(environ.get(k) for k in THREAD_ENV):
        return None
    import torch
    now = torch.get_num_threads()
    at_import = now if _threads_at_import is None else _threads_at_import
    if now != at_import or at_import != usable_cpus():
        return None
    return default_threads()


@contextlib.contextmanager
def cpu_threads(device=None, environ=None):
    """Run the block on ``gclib_threads()`` torch threads when ``device`` is the CPU (or None), and put back the
    count the caller had afterwards: a library call leaves the caller's process as it found it."""
    import torch
    before = torch.get_num_threads()
    n = gclib_threads(environ) if device is None or torch.device(device).type == "cpu" else None
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
