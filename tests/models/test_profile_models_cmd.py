"""``lightfer.eval.profile`` known answers and the ``lightfer models`` verb."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from lightfer.cli import models_cmd
from lightfer.eval.profile import count_flops, profile_model
from lightfer.models import count_params, create_model


def test_flops_known_answers() -> None:
    assert count_flops(nn.Linear(10, 20), torch.randn(1, 10)) == 2 * 10 * 20
    conv = nn.Conv2d(1, 4, 3, padding=1)
    assert count_flops(conv, torch.randn(1, 1, 8, 8)) == 2 * 4 * 9 * 64
    assert count_flops(conv, torch.randn(2, 1, 8, 8)) == 2 * 2 * 4 * 9 * 64


def test_profile_model_matches_direct_counts() -> None:
    prof = profile_model("shufflenet_v2_x0_5", input_size=48, repeats=2, onnx=True)
    model = create_model("shufflenet_v2_x0_5", input_size=48)
    assert prof.params == count_params(model) and prof.input_size == 48 and prof.in_chans == 1
    assert prof.flops == count_flops(model, torch.randn(1, 1, 48, 48)) > 0
    assert prof.torch_ms is not None and prof.torch_ms > 0 and prof.onnx_ms is not None and prof.onnx_ms > 0
    assert prof.threads == torch.get_num_threads()
    # 48 px takes the stride-1 stem and 96 px the stride-2 one: the same maps, so the same FLOPs
    assert profile_model("shufflenet_v2_x0_5", input_size=96, latency=False).flops == prof.flops
    s2 = dict(stem="s2")  # with one stem, FLOPs grow with the area: (80/48)^2 = 2.8
    big = profile_model("shufflenet_v2_x0_5", input_size=80, latency=False, model_kwargs=s2).flops
    assert big > 2.5 * profile_model("shufflenet_v2_x0_5", input_size=48, latency=False, model_kwargs=s2).flops
    # train-time branches fold before measuring: the served network's cost
    rep = profile_model("shufflenet_v2_x0_5", input_size=48, latency=False, model_kwargs={"rep": 1})
    assert (rep.flops, rep.params) == (prof.flops, prof.params)
    # the cost of a student is far below the teacher's
    teacher = profile_model("swinv2_base", input_size=32, latency=False)
    student = profile_model("swinv2_student_64", input_size=32, latency=False)
    assert teacher.flops > 10 * student.flops and teacher.params > 10 * student.params


def test_profile_batch_times_calls_and_keeps_flops_per_face() -> None:
    one = profile_model("shufflenet_v2_x0_5", input_size=48, latency=False)
    two = profile_model("shufflenet_v2_x0_5", input_size=48, repeats=2, onnx=True, batch=2)
    assert two.batch == 2 and one.batch == 1 and two.flops == one.flops  # FLOPs per face, not per call
    assert two.torch_ms is not None and two.torch_ms > 0 and two.onnx_ms is not None and two.onnx_ms > 0
    # a shipped int8 file takes the batch of 2 too (its batch axis is dynamic)
    shipped = profile_model("shufflenet_v2_x1_0_fer2013", repeats=2, onnx=True, batch=2, latency=False)
    assert shipped.onnx_int8_ms is not None and shipped.onnx_int8_ms > 0 and shipped.batch == 2
    with pytest.raises(ValueError, match="batch"):
        profile_model("shufflenet_v2_x0_5", batch=0)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    models_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["models", *argv])
    return args.func(args)


def test_models_verb_outputs(capsys, tmp_path) -> None:
    threads = str(torch.get_num_threads())  # keep the test process's thread count
    assert _run(["--filter", "shufflenet_v2_x0", "--names-only"]) == 0
    names = capsys.readouterr().out.split()
    assert names[0] == "shufflenet_v2_x0_5" and names == sorted(names)  # + the shipped ones
    assert "shufflenet_v2_x0_5_fer2013" in names and all(n.startswith("shufflenet_v2_x0") for n in names)
    out = tmp_path / "m.json"
    assert _run(["shufflenet_v2_x0_5", "swinv2_student_64", "--repeats", "2", "--threads", threads, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "shufflenet_v2_x0_5" in table and "swinv2_student_64" in table and " ms" in table
    rows = json.loads(out.read_text())["models"]
    assert [r["name"] for r in rows] == ["shufflenet_v2_x0_5", "swinv2_student_64"]
    assert rows[1]["input_size"] == 64 and rows[1]["torch_ms"] > 0 and rows[1]["onnx_ms"] is None
    assert _run(["swinv2_student_64", "--no-latency", "--markdown", "--threads", threads]) == 0
    md = capsys.readouterr().out
    assert "| swinv2_student_64 | 1x64 |" in md and "| - | - |" in md
    assert _run(["shufflenet_v2_x0_5", "--repeats", "2", "--batch", "2", "--threads", threads, "--json", str(out)]) == 0
    assert "per call of 2 faces" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["batch"] == 2 and saved["models"][0]["batch"] == 2 and saved["models"][0]["torch_ms"] > 0


def test_cpu_clock() -> None:
    from lightfer.eval.profile import time_torch

    model, x = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU()), torch.randn(1, 1, 32, 32)
    if torch.get_num_threads() == 1:
        assert time_torch(model, x, repeats=3, clock="cpu") > 0
    with pytest.raises(ValueError, match="clock"):
        time_torch(model, x, repeats=3, clock="gpu")


@pytest.mark.parametrize(
    "argv", [["no_such_model"], ["--filter", "zzz"], ["--threads", "0"], ["--batch", "0"], ["--clock", "cpu", "--threads", "2"]]
)
def test_models_verb_errors(argv: list[str], capsys) -> None:
    assert _run(argv) == 2
    assert "lightfer models:" in capsys.readouterr().err


def test_models_verb_is_wired_into_lightfer(capsys) -> None:
    from lightfer.cli import main

    assert main(["models", "--names-only", "--filter", "swinv2_student"]) == 0
    assert capsys.readouterr().out.split() == ["swinv2_student_112", "swinv2_student_64"]


def _train_checkpoint(path, name: str, input_size: int, **kwargs) -> nn.Module:
    """A checkpoint in ``lightfer train``'s layout for ``create_model(name, input_size=..., **kwargs)``."""
    from lightfer.train.checkpoint import save_checkpoint

    model = create_model(name, input_size=input_size, **kwargs)
    save_checkpoint({"model_name": name, "model": model.state_dict(), "ema": None, "epoch": 7,
                     "model_kwargs": kwargs, "model_input_size": input_size,
                     "pretrained_cfg": model.pretrained_cfg.to_dict()}, path)
    return model


def test_models_verb_profiles_training_checkpoints(capsys, tmp_path) -> None:
    threads = str(torch.get_num_threads())
    se = _train_checkpoint(tmp_path / "se.pt", "shufflenet_v2_x0_5", 48, head="se")
    rs = _train_checkpoint(tmp_path / "rs.pt", "shufflenet_v2_x0_5", 64, resizer={"in_size": 40, "filters": 4})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "m.json"
    argv = [str(tmp_path / "se.pt"), "shufflenet_v2_x0_5", str(tmp_path / "junk.pt"), str(tmp_path / "rs.pt"),
            "--input-size", "48", "--repeats", "2", "--batch", "2", "--threads", threads, "--json", str(out)]
    assert _run(argv) == 1  # the unreadable file fails alone, named; the others are measured
    assert "junk.pt" in capsys.readouterr().err
    rows = {r["name"]: r for r in json.loads(out.read_text())["models"]}
    plain, se_row, rs_row = rows["shufflenet_v2_x0_5"], rows[str(tmp_path / "se.pt")], rows[str(tmp_path / "rs.pt")]
    assert se_row["params"] == count_params(se) > plain["params"] and se_row["flops"] > plain["flops"]
    assert se_row["input_size"] == 48 and se_row["batch"] == 2 and se_row["torch_ms"] > 0
    assert "checkpoint of shufflenet_v2_x0_5 (head=se), epoch 7" == se_row["description"]
    # the resizer model takes its own low-resolution input (40 px), whatever --input-size says for names
    assert rs_row["input_size"] == 40 and rs_row["params"] == count_params(rs)
    assert rs_row["flops"] == count_flops(rs.eval(), torch.randn(1, 1, 40, 40))
    assert _run([str(tmp_path / "se.pt"), "--names-only"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "se.pt")]
