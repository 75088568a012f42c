"""Where the pinned digests were recorded, and whether this machine may compare them.

tests/test_training_pinned.py (PINNED) and tests/test_config.py (WEIGHTS_PINNED) hold sha256 digests of short training
runs. Floating-point results depend on the kernels the processor, torch, MKL and oneDNN pick, so an absolute digest
says something only on the platform that recorded it: ``RECORDED_ON`` below is ``gclib.machine.fingerprint()`` there
(regenerate with ``python tests/test_training_pinned.py``). Elsewhere the digest tests skip and say which entries
differ; the invariances the digests protected (the same run twice, resumed against uninterrupted, stacked against
alone, composed against flat config, a reference to tolerance) are asserted on every machine.
"""
import pytest

# gclib.machine.fingerprint() of the machine the digests were recorded on (an AMD EPYC under KVM, 2 cores).
RECORDED_ON = {
    "machine": "x86_64",
    "cpu_vendor": "AuthenticAMD",
    "cpu_model": "AMD EPYC",
    "cpu_family_model": "26/2",
    "cpu_kernel_flags": "sse4_2 avx avx2 fma f16c avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni",
    "torch": "2.14.1+cu130",
    "torch_cpu_capability": "AVX512",
    "torch_libraries": "Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64 "
                       "architecture applications; Intel(R) MKL-DNN v3.12.0 (Git Hash "
                       "80afa71049cd69a3df32adcccb623b12cd7baa22); OpenMP 201511 (a.k.a. OpenMP 4.5); LAPACK is enabled "
                       "(usually provided by MKL); NNPACK is enabled",
    "torch_build_sha256": "9d29e9e1a046894a",
    "numpy": "2.4.6",
    "python": "3.11",
    "libc": "glibc 2.36",
    "kernel_env": "",
}


def platform_differences(recorded: dict = RECORDED_ON, here: dict | None = None) -> list[str]:
    """What differs between the recording platform and this one (``here``: gclib.machine.fingerprint() unless
    given); empty on the recording platform."""
    from gclib import machine
    return machine.fingerprint_differences(recorded, machine.fingerprint() if here is None else here)


def require_recording_platform(recorded: dict = RECORDED_ON, here: dict | None = None) -> None:
    """Skip the calling test, naming the differences, unless this is the platform the digests were recorded on."""
    diff = platform_differences(recorded, here)
    if diff:
        pytest.skip("absolute digests are compared only on the platform that recorded them (other kernels round "
                    "the last bits differently; the in-run invariances are asserted instead); here: " + "; ".join(diff))
