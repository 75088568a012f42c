"""Packaging: environment.yml names the packages and lower bounds of pyproject.toml's core and extras; the wheel
carries the training presets, and an installed gclib trains a preset by name outside the checkout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10: pip's own copy of tomli
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- environment.yml
def pyproject_requirements(text: str) -> dict:
    """{package: lower-bound specifier} of the core dependencies and every extra (gclib's own extras left out)."""
    project = tomllib.loads(text)["project"]
    items = list(project["dependencies"]) + [r for rs in project["optional-dependencies"].values() for r in rs]
    out = {}
    for req in map(Requirement, items):
        name = canonicalize_name(req.name)
        if name == "gclib":
            continue
        if name in out and out[name] != str(req.specifier):
            raise AssertionError(f"pyproject.toml gives {name} two bounds: {out[name]} and {req.specifier}")
        out[name] = str(req.specifier)
    return out


def environment_requirements(text: str) -> dict:
    """{package: specifier} of environment.yml: its conda and pip dependencies, without python, pip and gclib."""
    deps = yaml.safe_load(text)["dependencies"]
    items = [d for d in deps if isinstance(d, str)] + [p for d in deps if isinstance(d, dict) for p in d.get("pip", [])]
    out = {}
    for item in items:
        if item.startswith("-e"):
            continue
        req = Requirement(item)
        name = canonicalize_name(req.name)
        if name in ("python", "pip"):
            continue
        if name in out:
            raise AssertionError(f"environment.yml names {name} twice")
        out[name] = str(req.specifier)
    return out


def differences(expected: dict, got: dict) -> list:
    """One line per package that environment.yml lacks, has in excess, or bounds otherwise."""
    lines = [f"environment.yml lacks {n}{expected[n]}" for n in sorted(set(expected) - set(got))]
    lines += [f"environment.yml has {n}{got[n]}, which pyproject.toml does not" for n in sorted(set(got) - set(expected))]
    lines += [f"{n}: pyproject.toml {expected[n]}, environment.yml {got[n]}" for n in sorted(set(expected) & set(got))
              if expected[n] != got[n]]
    return lines


def test_environment_yml_matches_pyprojects_extras():
    expected = pyproject_requirements((ROOT / "pyproject.toml").read_text())
    env_text = (ROOT / "environment.yml").read_text()
    got = environment_requirements(env_text)
    assert differences(expected, got) == []
    assert {"pytest-xdist", "safetensors", "torch", "submitit"} <= set(got)
    assert '-e ".[all]"' in env_text                     # gclib itself, with every extra
    # the comparison sees a missing package, an extra one and another bound
    broken = env_text.replace("  - pytest-xdist>=3.5\n", "").replace("pandas>=2.0", "pandas>=1.0")
    broken = broken.replace("  - pip:\n", "  - pip:\n      - black>=24\n")
    assert differences(expected, environment_requirements(broken)) == [
        "environment.yml lacks pytest-xdist>=3.5", "environment.yml has black>=24, which pyproject.toml does not",
        "pandas: pyproject.toml >=2.0, environment.yml >=1.0"]


# ------------------------------------------------------------------------------------------- the wheel
def _build_wheel(out: Path) -> Path:
    """gclib's wheel, built offline from a copy of the checkout's package files (so no build/ or egg-info lands in
    the checkout, and parallel test workers never share a build folder)."""
    import shutil
    src = out / "src"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "gclib", src / "gclib", symlinks=True, ignore=ignore)   # gclib/presets -> ../params/train
    shutil.copytree(ROOT / "params" / "train", src / "params" / "train", ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out / "dist"), str(src)], check=True, env=env, capture_output=True, text=True)
    (wheel,) = (out / "dist").glob("gclib-*.whl")
    return wheel


def _fresh_environment(where: Path, wheel: Path) -> Path:
    """A new virtual environment holding only the wheel's gclib; torch and the other installed packages are reused
    through a .pth file naming this interpreter's site-packages (read-only, no gclib there is visible: an editable
    install's own .pth files in that folder are not processed). Returns its python."""
    import site
    import sysconfig
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    shared = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "zz_shared_site_packages.pth").write_text("\n".join(dict.fromkeys(shared)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, env=env, capture_output=True, text=True)
    return py


@pytest.mark.wheel
def test_the_installed_wheel_trains_a_preset_by_name_outside_the_checkout(tmp_path):
    t0 = time.perf_counter()
    wheel = _build_wheel(tmp_path / "build")
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    presets = sorted(p.name for p in (ROOT / "params" / "train").glob("*.yaml"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("gclib/presets/") and "/flows/" not in n) == presets
    assert sorted(n for n in names if n.startswith("gclib/presets/flows/")) == [
        f"gclib/presets/flows/{f}.yaml" for f in ("gc", "ic", "ot")]
    py = _fresh_environment(tmp_path, wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GCLIB_RUNS")}
    env["OMP_NUM_THREADS"] = "1"
    small = ["--set", "total_steps=20", "--set", "batch_size=32", "--set", "num_data=256", "--set", "hidden=16",
             "--set", "depth=1", "--set", "eval_metrics=[]", "--set", "checkpoint_every=10"]
    # the installed command trains the toy preset by name
    trained = subprocess.run([str(py.parent / "gclib"), "train", "toy", "--flow", "gc", *small, "--no-progress"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert "finished: runs/toy_gc-" in trained.stdout
    run_dir = next((work / "runs").glob("toy_gc-*"))
    assert (run_dir / "done.json").is_file() and (run_dir / "checkpoints" / "ckpt-00000020.pt").is_file()
    # the rest in one process of that environment (each start imports torch): where gclib comes from, presets,
    # config, a file of the user's with --flow (the packaged overlays), a wrong name
    (work / "my.yaml").write_text("name: mine_{flow}\ndataset: two_gaussians\nnum_data: 256\nhidden: 16\n"
                                  "depth: 1\nsigma_max: 5.0\ns0: 2\ns1: 8\nbatch_size: 32\ntotal_steps: 10\n"
                                  "progress: false\n")
    script = f"""
import contextlib, io, json, gclib
from gclib.cli import main
out = {{"file": gclib.__file__}}
for name, argv in [("presets", ["presets"]), ("config", ["config", "toy", "--flow", "gc", *{small!r}]),
                   ("mine", ["train", "./my.yaml", "--flow", "gc"]), ("bad", ["train", "cifar11", "--flow", "gc"])]:
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main(argv)
    out[name] = [rc, o.getvalue(), e.getvalue()]
print(json.dumps(out))
"""
    r = subprocess.run([str(py), "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(tmp_path / "venv") and not Path(got["file"]).is_relative_to(ROOT)
    rc, out, _ = got["presets"]
    assert rc == 0 and "  toy " in out and "  cifar10_ect " in out and "flow overlays (--flow): gc, ic, ot" in out
    rc, out, _ = got["config"]
    assert rc == 0 and f"# run directory: {Path('runs') / run_dir.name}\n" in out   # where train put it
    rc, out, err = got["mine"]
    assert rc == 0 and "finished: runs/mine_gc-" in out, err
    rc, _, err = got["bad"]
    assert rc == 2 and "is not a preset of gclib; presets: celeba64, cifar10," in err
    print(f"wheel test: {time.perf_counter() - t0:.1f} s")
