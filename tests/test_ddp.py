"""torchrun with 2 CPU processes (gloo): a few steps, rank 0 writes, weights stay in sync, all RNG states saved."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_two_process_gloo(tmp_path):
    cfg = dict(name="ddp", dataset="two_gaussians", num_data=256, model="mlp", hidden=16, depth=1, emb_dim=8,
               sigma_max=5.0, s0=2, s1=8, distance="l2", flow="ot", optimizer="adam", lr=1e-3, batch_size=16,
               total_steps=4, checkpoint_every=2, progress=False, device="cpu", run_dir="run")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "gclib", "train", "c.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads((tmp_path / "run" / "done.json").read_text())
    assert done["world_size"] == 2 and done["step"] == 4
    assert done["param_checksums"][0] == done["param_checksums"][1]  # DDP kept the replicas identical
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert df["step"].tolist() == [1, 2, 3, 4] and df["ot_batch"].eq(8).all()  # OT matched per rank
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    s0, s1 = ckpt["rng"][0]["streams"], ckpt["rng"][1]["streams"]
    assert not torch.equal(s0["noise"], s1["noise"])  # per-rank seeds
    assert r.stdout.count("[ddp] step 4/4 (100.0%)") == 1 and r.stdout.count("[ddp] started:") == 1  # rank 0 logs
    assert "x 2 processes" in r.stdout
