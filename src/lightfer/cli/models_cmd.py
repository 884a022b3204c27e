"""``lightfer models``: list the expression architectures with parameters, FLOPs and CPU latency."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """examples:
  lightfer models                                   # every architecture, torch latency with 1 thread
  lightfer models --names-only                      # just the names
  lightfer models swinv2_student_64 shufflenet_v2_x1_0 --onnx --threads 2
  lightfer models --filter swinv2 --no-latency      # params and FLOPs only (fast)
  lightfer models --markdown > table.md             # a Markdown table (as in docs/models.md)
  lightfer models --clock cpu --onnx                # CPU time of 1 thread: stable on a busy machine
  lightfer models shufflenet_v2_x0_5_fer2013 --onnx --batch 2   # one face with flip TTA (two crops per call)
  lightfer models runs/my_run/last.pt shufflenet_v2_x0_5_fer2013 --onnx --clock cpu   # a trained checkpoint beside the default
  lightfer models shufflenet_v2_x1_0 --input-size 48 --json -"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` verb."""
    p = sub.add_parser(
        "models",
        help="list the expression models with params, FLOPs and CPU latency",
        description="List every registered expression classifier at its default input (or --input-size), or the "
        "model of a training checkpoint as it was trained: parameters, FLOPs per face (torch.utils.flop_counter, "
        "2 x multiply-adds) and CPU latency per face (batch 1 unless --batch, median of --repeats after warm-up; "
        "torch threads set once from --threads).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*",
                   help="registered model names or `lightfer train` checkpoint files (default: every registered name)")
    p.add_argument("--filter", default=None, help="only names containing this text")
    p.add_argument("--names-only", action="store_true", help="print the names and exit")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default 1)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per model; the median is shown (default 20)")
    p.add_argument("--batch", type=int, default=1,
                   help="faces per timed call (default 1; 2 = the cost of one face with flip TTA); FLOPs stay per face")
    p.add_argument("--input-size", type=int, default=None,
                   help="square input side instead of each default (registered names; a checkpoint keeps its own)")
    p.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: elapsed time; cpu: CPU time of the timing thread (needs --threads 1; stable on a busy machine)",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the timings")
    p.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (exports each model to a temp file; a shipped int8 model is timed too)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON ('-' for stdout)")
    p.set_defaults(func=run)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    """Profile and print the selected models and checkpoints; exit code 2 on an unknown name or a bad option,
    1 when a checkpoint file could not be read (the others are still shown)."""
    from lightfer.models import get_pretrained_cfg, list_models

    known = list_models()
    files = [n for n in args.names if n not in known and Path(n).is_file()]  # training checkpoints
    unknown = [n for n in args.names if n not in known and n not in files]
    if unknown:
        from lightfer.models.shipped import retired_note

        notes = [n for n in map(retired_note, unknown) if n]
        print(f"lightfer models: unknown model(s) {', '.join(unknown)} (neither a registered name nor a file); "
              f"known: {', '.join(known)}" + "".join(f"\n{n}" for n in notes), file=sys.stderr)
        return 2
    if args.threads < 1 or args.repeats < 1 or args.batch < 1:
        print("lightfer models: --threads, --repeats and --batch must be >= 1", file=sys.stderr)
        return 2
    if args.clock == "cpu" and args.threads != 1:
        print("lightfer models: --clock cpu measures one thread; use --threads 1", file=sys.stderr)
        return 2
    names = [n for n in args.names if n not in files] if args.names else known
    if args.filter:
        names = [n for n in names if args.filter in n]
    if not names and not files:
        print("lightfer models: no model matches", file=sys.stderr)
        return 2
    if args.names_only:
        for n in [*names, *files]:
            print(n)
        return 0

    import torch

    from lightfer.eval.profile import ModelProfile, profile_checkpoint, profile_model

    if torch.get_num_threads() != args.threads:
        torch.set_num_threads(args.threads)  # once per process, before any timing
    rows = []
    failed = 0
    if args.batch > 1 and not args.markdown and args.json != "-":
        print(f"latencies in ms per call of {args.batch} faces (FLOPs per face)")
    timing = dict(latency=not args.no_latency, onnx=args.onnx, repeats=args.repeats, clock=args.clock,
                  batch=args.batch)
    for n in [*names, *files]:
        prof: ModelProfile
        if n in files:
            try:
                prof = profile_checkpoint(n, **timing)
                description = _checkpoint_description(n)
            except Exception as e:  # noqa: BLE001 - name the file, go on with the others
                print(f"lightfer models: {n}: {e}", file=sys.stderr)
                failed += 1
                continue
        else:
            prof = profile_model(n, input_size=args.input_size, **timing)
            description = get_pretrained_cfg(n).description
        row = prof.to_dict()
        row["description"] = description
        rows.append(row)
        if not args.markdown and args.json != "-":
            print(
                f"{n:24s} {prof.in_chans}x{prof.input_size:<4d} {prof.params / 1e6:8.2f}M "
                f"{prof.flops / 1e9:8.3f}G {_fmt(prof.torch_ms):>8s} ms {_fmt(prof.onnx_ms):>8s} ms"
                + (f" {_fmt(prof.onnx_int8_ms):>8s} ms int8" if prof.onnx_int8_ms is not None else ""),
                flush=True,
            )
    if args.markdown:
        what = "per face, batch 1" if args.batch == 1 else f"per call of {args.batch} faces"
        print(f"CPU latency {what}, {args.threads} thread(s), median of {args.repeats}, {args.clock} clock.\n")
        unit = "ms/face" if args.batch == 1 else f"ms/call of {args.batch}"
        print(f"| model | input | params | GFLOPs | torch {unit} | ORT {unit} | notes |")
        print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for r in rows:
            print(
                f"| {r['name']} | {r['in_chans']}x{r['input_size']} | {r['params'] / 1e6:.2f}M | {r['flops'] / 1e9:.3f} "
                f"| {_fmt(r['torch_ms'])} | {_fmt(r['onnx_ms'])} | "
                + (f"int8 in ORT: {_fmt(r['onnx_int8_ms'])} ms. " if r.get("onnx_int8_ms") is not None else "")
                + f"{r['description']} |"
            )
    if args.json:
        text = json.dumps({"threads": args.threads, "clock": args.clock, "batch": args.batch, "models": rows}, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as fh:
                fh.write(text + "\n")
    return 1 if failed else 0


def _checkpoint_description(path: str) -> str:
    """``"checkpoint of NAME (option=value, ...), epoch E"`` from a training checkpoint's header."""
    from lightfer.train.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    opts = ", ".join(f"{k}={v}" for k, v in (state.get("model_kwargs") or {}).items())
    epoch = state.get("epoch")
    return (f"checkpoint of {state.get('model_name', '?')}" + (f" ({opts})" if opts else "")
            + (f", epoch {epoch}" if epoch is not None else ""))
