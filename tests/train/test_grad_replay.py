"""scripts/grad_replay.py: resumes a tiny run and prints each replayed step's batch size and gradient norm."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from lightfer.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(REPO / "scripts" / "grad_replay.py")]
TINY = ["data.synthetic_size=20", "data.synthetic_image=16", "batch_size=8", "progress=false", "ema_decay=0.9",
        "model.kwargs={depths: [1, 1, 1, 1]}", "epochs=3"]  # 20 training images at 8: batches of 8, 8 and 4


def _replay(config: Path, ck: Path, *args: str) -> str:
    r = subprocess.run([*SCRIPT, "--config", str(config), "--checkpoint", str(ck), "--threads", "1", *args],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_replay_prints_the_steps_of_the_next_epoch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(["train", str(REPO / "configs" / "smoke.yaml"), "--output", str(out), "--set", *TINY,
                "--stop-after", "1"]) == 0
    before = (out / "last.pt").read_bytes()
    text = _replay(out / "config.yaml", out / "last.pt", "--steps", "3", "--terms", "2")
    steps = re.findall(r"step +(\d+) +batch +(\d+) +grad norm +([\d.]+)", text)
    assert [(s, b) for s, b, _ in steps] == [("0", "8"), ("1", "8"), ("2", "4")]
    assert all(float(n) > 0 for _, _, n in steps)
    assert re.search(r"step +2 +terms: ce [\d.]+ \(grad [\d.]+\)", text)
    assert "median over 3 steps" in text and "largest: step" in text
    assert (out / "last.pt").read_bytes() == before  # the run's own folder is left as it was
    dropped = _replay(out / "config.yaml", out / "last.pt", "--steps", "2", "--ema-as-model",
                      "--set", "data.drop_last=true")
    assert [b for _, b, _ in re.findall(r"step +(\d+) +batch +(\d+) +grad norm +([\d.]+)", dropped)] == ["8", "8"]
