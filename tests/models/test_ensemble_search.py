"""scripts/ensemble_search.py on a tiny self-made FER2013 CSV: subset sizes, the comparison's TTA, refusals."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.data.synth import face_like, write_fer_csv

REPO = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(REPO / "scripts" / "ensemble_search.py")]
MEMBERS = ["shufflenet_v2_x0_5_fer2013", "shufflenet_v2_x0_5_fer2013_robust", "shufflenet_v2_x0_5_fer2013_pairkd"]


def _csv(tmp_path: Path) -> Path:
    rows = [(i % 7, face_like(i), "PublicTest" if i < 14 else "PrivateTest") for i in range(28)]
    return write_fer_csv(tmp_path / "tiny.csv", rows)


def test_pairs_only_and_the_comparison_scored_with_flip_tta(tmp_path: Path) -> None:
    """--max-members 2 searches the three pairs and not the triple; --compare-tta flips the reference only."""
    args = [f"--member={m}" for m in MEMBERS]
    r = subprocess.run([*SCRIPT, "--data", f"fer2013:{_csv(tmp_path)}", *args, "--max-members", "2",
                        "--compare", MEMBERS[0], "--compare-tta"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    subsets = [line for line in r.stdout.splitlines() if line.startswith("val") and " + " in line]
    assert len(subsets) == 3 and all(line.count(" + ") == 1 for line in subsets)
    chosen = re.search(r"chosen on val: (\S+)", r.stdout).group(1).split(",")
    assert len(chosen) == 2 and set(chosen) <= set(MEMBERS)
    assert re.search(rf"test  vs {MEMBERS[0]} \(flip TTA\) \(\d\.\d{{4}}\): [+-]\d", r.stdout)
    # without the flag the reference follows --tta (off here): no "(flip TTA)"
    r = subprocess.run([*SCRIPT, "--data", f"fer2013:{_csv(tmp_path)}", *args, "--compare", MEMBERS[0]],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "(flip TTA)" not in r.stdout
    assert sum(line.startswith("val") and line.count(" + ") == 2 for line in r.stdout.splitlines()) == 1  # the triple


def test_a_subset_of_one_is_refused(tmp_path: Path) -> None:
    r = subprocess.run([*SCRIPT, "--data", f"fer2013:{_csv(tmp_path)}", "--member", MEMBERS[0], "--member",
                        MEMBERS[1], "--max-members", "1"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "--max-members: 2 or more" in r.stderr
