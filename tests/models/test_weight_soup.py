"""Weight soups: the weighted mean of one architecture's weights, written as a checkpoint the tools read."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightfer.models import create_model
from lightfer.models.shipped import weight_soup
from lightfer.train.checkpoint import load_model_from_checkpoint, save_checkpoint

A, B = "shufflenet_v2_x0_5_fer2013", "shufflenet_v2_x0_5_fer2013_pairkd"  # one lineage: A was trained from B
REPO = Path(__file__).resolve().parents[2]


def test_a_soup_is_the_weighted_mean_of_every_float_tensor_and_loads_as_a_checkpoint(tmp_path: Path) -> None:
    sa = create_model(A, pretrained=True).state_dict()
    sb = create_model(B, pretrained=True).state_dict()
    state = weight_soup([A, B], [3.0, 1.0])  # normalised to 0.75 / 0.25
    assert state["soup"] == {"members": [A, B], "weights": [0.75, 0.25]}
    assert state["model_name"] == "shufflenet_v2_x0_5" and state["pretrained_cfg"]["classes"]
    running_mean = next(k for k in sa if k.endswith("running_mean"))  # BatchNorm statistics are averaged too
    for key in ("head.fc.weight", running_mean):
        torch.testing.assert_close(state["model"][key], 0.75 * sa[key] + 0.25 * sb[key])
    counter = next(k for k in sa if k.endswith("num_batches_tracked"))
    assert torch.equal(state["model"][counter], sa[counter])
    path = save_checkpoint(state, tmp_path / "soup.pt")
    model = load_model_from_checkpoint(path)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = create_model("shufflenet_v2_x0_5", classes=create_model(A).pretrained_cfg.classes)
        ref.load_state_dict(state["model"])
        torch.testing.assert_close(model(x), ref.eval()(x))
    # it ships like a trained checkpoint: the package pair holds the soup's weights
    from safetensors.torch import load_file

    from lightfer.models.shipped import ship_checkpoint
    weights = ship_checkpoint(path, "soup_test", description="a soup", provenance={}, out_dir=tmp_path, tta_flip=True)
    shipped = load_file(str(weights))
    assert all(torch.equal(shipped[k], v) for k, v in state["model"].items())
    # all the weight on one member gives that member back
    one = weight_soup([A, B], [1.0, 0.0])["model"]
    assert all(torch.equal(one[k], v) for k, v in sa.items())


def test_a_soup_refuses_members_of_other_architectures_and_bad_weights() -> None:
    with pytest.raises(ValueError, match="differs from .* architecture or tensor shapes"):
        weight_soup([A, "shufflenet_v2_x1_0_fer2013"])
    with pytest.raises(ValueError, match="differs from .* classes"):  # same network, FER+'s eight classes
        weight_soup(["shufflenet_v2_x0_5_ferplus", A])
    with pytest.raises(ValueError, match="3 weights for 2 members"):
        weight_soup([A, B], [1, 1, 1])
    with pytest.raises(ValueError, match="at least two"):
        weight_soup([A])


def test_the_script_writes_a_checkpoint_and_names_a_bad_member(tmp_path: Path) -> None:
    script = [sys.executable, str(REPO / "scripts" / "weight_soup.py")]
    out = tmp_path / "s.pt"
    r = subprocess.run([*script, A, B, "--weights", "0.5,0.5", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "0.5 x " + A in r.stdout
    r = subprocess.run([*script, A, "no_such_model", "--out", str(tmp_path / "t.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "no_such_model" in r.stderr
