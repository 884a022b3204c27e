"""``lightfer export``: write a model (or the face detector) to ONNX and check it against PyTorch."""
from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  lightfer export fer_mini_xception --out mini_xception.onnx
  lightfer export detector --out retinaface.onnx
  lightfer export shufflenet_v2_x1_0 --weights run/best.safetensors --out student.onnx
the expression model takes (N, C, S, S) float input normalised as its pretrained config says
(printed after export); the detector takes (N, 3, H, W) BGR minus (104, 117, 123)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` verb."""
    p = sub.add_parser(
        "export",
        help="export a model or the detector to ONNX (with a parity check)",
        description="Export to ONNX (opset 17, dynamic batch) and verify ONNX Runtime against PyTorch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="registered model name, or 'detector'")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--weights", help="state dict (.safetensors / .pt) to load instead of the pretrained weights")
    p.add_argument("--atol", type=float, default=1e-4, help="parity tolerance (absolute)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and check; returns 1 on a parity failure."""
    import json

    import torch

    from lightfer.export.onnx import check_onnx_parity, export_onnx

    if args.model == "detector":
        from lightfer.detection.detector import build_torch_model

        model = build_torch_model()
        example = torch.randn(1, 3, 240, 320) * 50
        path = export_onnx(model, args.out, example, output_names=("loc", "conf", "landms"), dynamic_hw=True)
        cfg = None
    else:
        from lightfer.models import create_model

        model = create_model(args.model, pretrained=args.weights is None)
        if args.weights:
            if args.weights.endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(args.weights)
            else:
                state = torch.load(args.weights, map_location="cpu", weights_only=True)
                state = state.get("model", state)
            model.load_state_dict(state)
        cfg = model.pretrained_cfg
        s = cfg.input_size
        example = torch.randn(2, cfg.in_chans, s, s)
        path = export_onnx(model, args.out, example)
    try:
        diff = check_onnx_parity(model, path, example, atol=args.atol)
    except AssertionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} (max |ONNX - PyTorch| = {diff:.2e})")
    if cfg is not None:
        print("preprocessing: " + json.dumps({k: v for k, v in cfg.to_dict().items()
                                                if k in ("input_size", "in_chans", "mean", "std", "classes",
                                                         "crop_mode", "crop_margin")}))
    return 0
