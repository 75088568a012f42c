"""gclib.machine: the platform fingerprint (what decides the last bits of a CPU run) and the default OpenMP waiting."""
import os
import subprocess
import sys
from pathlib import Path

from gclib import machine

ROOT = Path(__file__).resolve().parents[1]

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 hypervisor

processor\t: 1
vendor_id\t: SomethingElse
"""
EPYC = XEON.replace("GenuineIntel", "AuthenticAMD").replace("Intel(R) Xeon(R) Platinum 8480+", "AMD EPYC") \
    .replace("cpu family\t: 6", "cpu family\t: 26").replace("143", "2") \
    .replace(" avx512_fp16 amx_bf16 amx_tile amx_int8", "")


def test_cpu_info_reads_the_first_processor():
    info = machine.cpu_info(XEON)
    assert info["vendor"] == "GenuineIntel" and info["model_name"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["family_model"] == "6/143" and "amx_tile" in info["flags"] and "hypervisor" in info["flags"]


def test_fingerprint_tells_the_two_cpus_of_the_issue_apart():
    xeon, epyc = machine.fingerprint(XEON, environ={}), machine.fingerprint(EPYC, environ={})
    assert xeon["cpu_kernel_flags"].split() == ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw",
                                                "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                                                "amx_bf16", "amx_int8"]   # hypervisor and other flags are left out
    assert xeon["torch_cpu_capability"] == epyc["torch_cpu_capability"]   # the old guard could not tell them apart
    diff = machine.fingerprint_differences(epyc, xeon)
    assert [d.split(":")[0] for d in diff] == ["cpu_vendor", "cpu_model", "cpu_family_model", "cpu_kernel_flags"]
    assert machine.fingerprint_differences(epyc, machine.fingerprint(EPYC, environ={})) == []
    assert all(isinstance(v, str) for v in epyc.values())


def test_fingerprint_names_the_libraries_and_the_variables_that_change_kernels():
    import torch
    fp = machine.fingerprint(EPYC, environ={"MKL_ENABLE_INSTRUCTIONS": "AVX2", "HOME": "/x"})
    assert fp["kernel_env"] == "MKL_ENABLE_INSTRUCTIONS=AVX2"
    assert fp["torch"] == torch.__version__ and fp["torch_build_sha256"]
    if torch.backends.mkl.is_available():
        assert "Math Kernel Library" in fp["torch_libraries"] and "Build settings" not in fp["torch_libraries"]
    changed = machine.fingerprint_differences(machine.fingerprint(EPYC, environ={}), fp)
    assert changed == ["kernel_env: '' -> 'MKL_ENABLE_INSTRUCTIONS=AVX2'"]
    assert machine.fingerprint_differences({"a": "1"}, {"a": "1", "b": "2"}) == ["b: '(absent)' -> '2'"]


def test_share_cpus_sets_passive_waiting_unless_the_user_chose():
    env = {}
    assert machine.share_cpus(env) == {"OMP_WAIT_POLICY": "PASSIVE"} and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for key, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "300000"), ("KMP_BLOCKTIME", "200")):
        env = {key: value}
        assert machine.share_cpus(env) == {} and env == {key: value}
    env = {"OMP_NUM_THREADS": "3"}
    machine.share_cpus(env)
    assert env["OMP_NUM_THREADS"] == "3"   # the thread count is never touched


def _in_fresh_python(code: str, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in machine.WAIT_ENV + ("OMP_NUM_THREADS",)}
    out = subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env}, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def test_importing_gclib_sets_the_policy_before_torch_loads_and_keeps_the_users_threads():
    code = ("import sys, os; import gclib; print(os.environ.get('OMP_WAIT_POLICY'), "
            "'torch' in sys.modules, __import__('torch').get_num_threads())")
    policy, _, _ = _in_fresh_python(code).split()
    assert policy == "PASSIVE"
    assert _in_fresh_python(code, OMP_WAIT_POLICY="active", OMP_NUM_THREADS="1").split() == ["active", "True", "1"]
    # gclib's own modules import torch only after the policy is in the environment
    first = _in_fresh_python("import builtins, os\n"
                             "real = builtins.__import__\n"
                             "def spy(name, *a, **k):\n"
                             "    if name == 'torch' and 'SEEN' not in os.environ:\n"
                             "        os.environ['SEEN'] = os.environ.get('OMP_WAIT_POLICY', 'unset')\n"
                             "    return real(name, *a, **k)\n"
                             "builtins.__import__ = spy\n"
                             "import gclib\n"
                             "print(os.environ['SEEN'])")
    assert first == "PASSIVE"
