"""gclib.machine: the platform fingerprint (what decides the last bits of a CPU run), the default OpenMP waiting and
gclib's default CPU thread count."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    base = {k: v for k, v in os.environ.items() if k not in machine.WAIT_ENV + machine.THREAD_ENV}
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


def test_the_default_is_half_the_usable_cpus_and_at_least_one():
    assert [machine.default_threads(c) for c in (1, 2, 3, 4, 16, 64)] == [1, 1, 1, 2, 8, 32]
    assert machine.default_threads() == max(1, machine.usable_cpus() // 2)


def test_gclib_threads_honours_the_users_choice():
    assert machine.gclib_threads({"GCLIB_THREADS": "3"}) == 3
    for bad in ("0", "-2", "two", ""):
        with pytest.raises(ValueError, match="GCLIB_THREADS=.* positive integer"):
            machine.gclib_threads({"GCLIB_THREADS": bad})
    assert machine.gclib_threads({"OMP_NUM_THREADS": "2"}) is None       # torch follows it already
    assert machine.gclib_threads({"MKL_NUM_THREADS": "2"}) is None
    assert machine.gclib_threads({"GCLIB_THREADS": "2", "OMP_NUM_THREADS": "1"}) == 2   # gclib's own wins for gclib


# In a fresh interpreter: torch's thread count before, inside and after gclib's CPU work (and inside a CUDA one).
PROBE = """
import json
{before}
import torch
from gclib import machine
{after}
seen = {{"start": torch.get_num_threads(), "want": machine.gclib_threads()}}
with machine.cpu_threads("cpu"):
    seen["cpu"] = torch.get_num_threads()
with machine.cpu_threads("cuda"):
    seen["cuda"] = torch.get_num_threads()
seen["after"] = torch.get_num_threads()
print(json.dumps(seen))
"""


def _probe(before="", after="", **env):
    return json.loads(_in_fresh_python(PROBE.format(before=before, after=after), **env).splitlines()[-1])


def test_gclib_work_runs_on_the_default_and_leaves_the_callers_count():
    n, default = machine.usable_cpus(), machine.default_threads()
    for before in ("import gclib", "import torch"):   # whichever the user imports first
        seen = _probe(before)
        assert seen == {"start": n, "want": default, "cpu": default, "cuda": n, "after": n}, before


def test_a_thread_count_the_user_chose_is_honoured():
    k = machine.usable_cpus() + 1    # neither torch's own count nor gclib's default
    chosen = {"start": k, "want": None, "cpu": k, "cuda": k, "after": k}
    assert _probe(before=f"import torch; torch.set_num_threads({k})") == chosen     # before import gclib
    assert _probe(after=f"torch.set_num_threads({k})") == chosen                     # after it
    env = _probe(OMP_NUM_THREADS=str(k))   # torch may cap it at its own count: whatever it runs on stays
    assert env["want"] is None and env["start"] == env["cpu"] == env["cuda"] == env["after"]
    start = machine.usable_cpus()
    assert _probe(GCLIB_THREADS=str(k)) == {"start": start, "want": k, "cpu": k, "cuda": start, "after": start}


TRAIN_PROBE = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from gclib.train import train
seen = {{"start": torch.get_num_threads()}}
cfg = tiny_config(__import__("pathlib").Path({tmp!r}), eval_every=10)
train(cfg, eval_fns=[lambda step, model: seen.setdefault("training", torch.get_num_threads()) and {{}}])
seen["after_train"] = torch.get_num_threads()
print(json.dumps(seen))
"""


def test_train_runs_on_gclibs_count_and_puts_the_callers_back(tmp_path):
    out = _in_fresh_python(TRAIN_PROBE.format(tests=str(ROOT / "tests"), tmp=str(tmp_path)))
    seen = json.loads(out.splitlines()[-1])
    n, default = machine.usable_cpus(), machine.default_threads()
    assert seen == {"start": n, "training": default, "after_train": n}
    # the user's count wins in both
    out = _in_fresh_python(TRAIN_PROBE.format(tests=str(ROOT / "tests"), tmp=str(tmp_path / "b")), GCLIB_THREADS="2")
    assert json.loads(out.splitlines()[-1]) == {"start": n, "training": 2, "after_train": n}
