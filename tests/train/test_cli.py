"""``lightfer train``: help, config errors, a tiny run, stop + resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightfer.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "smoke.yaml")
TINY = ["data.synthetic_size=16", "data.synthetic_image=16", "batch_size=8", "progress=false",
        "model.kwargs={depths: [1, 1, 1, 1]}"]


def test_help_lists_runnable_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "lightfer train configs/smoke.yaml" in out and "--resume" in out and "torchrun" in out


def test_print_config_applies_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["train", SMOKE, "--set", "optim.lr=0.25", "--output", "somewhere", "--print-config"]) == 0
    d = yaml.safe_load(capsys.readouterr().out)
    assert d["optim"]["lr"] == 0.25 and d["output_dir"] == "somewhere" and d["model"]["name"] == "swinv2_student_64"


@pytest.mark.parametrize("args, msg", [
    (["--set", "optim.lrr=1"], "unknown key"),
    (["--set", "epochs=many"], "expected an integer"),
])
def test_config_errors_exit_2(args: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["train", SMOKE, *args]) == 2
    assert msg in capsys.readouterr().err


def test_missing_config_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml not found" in capsys.readouterr().err


def test_stop_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["train", SMOKE, "--output", str(out), "--set", *TINY, "epochs=2"]
    assert cli([*args, "--stop-after", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["last"]["epoch"] == 1 and (out / "last.pt").is_file()
    assert cli([*args, "--resume"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["last"]["epoch"] == 2
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert "changed config" not in caplog.text
    assert cli([*args, "--resume", "--set", "epochs=3", "optim.lr=0.01"]) == 0  # extend the run, says what changed
    assert "changed config (epochs, optim.lr)" in caplog.text
    capsys.readouterr()
    assert cli(["train", SMOKE, "--output", str(tmp_path / "empty"), "--resume"]) == 2
    assert "last.pt not found" in capsys.readouterr().err
