"""`make lab`'s server: JupyterLab starts on a free local port and serves the four notebooks and the project's
python3 kernel through its REST API; then it is stopped."""
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {"toy_flows.ipynb", "ct_cd_gap.ipynb", "transport_cost.ipynb", "fid_curves.ipynb"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def test_jupyterlab_serves_the_notebooks(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.port_retries=0", "--allow-root"]
    env = {**__import__("os").environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        listing = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                listing = _get(f"{base}/api/contents/notebooks?token={token}")
                break
            except OSError:
                time.sleep(0.5)
        if listing is None:
            proc.kill()
            pytest.fail(f"JupyterLab did not answer on port {port}:\n{proc.stdout.read().decode()[-3000:]}")
        names = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
        assert NOTEBOOKS <= names, names
        kernels = _get(f"{base}/api/kernelspecs?token={token}")
        assert "python3" in kernels["kernelspecs"]
        # the page itself is served too
        with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.poll() is not None
