"""Per-stage CPU timings of the image pipeline (decode, detect, align, classify).

Each (backend, threads) configuration runs in its own subprocess, because torch's thread
count must be set once per process. Figures are medians over repeated runs after warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightfer.defaults import DEFAULT_MODEL

STAGES = ("decode", "detect", "align", "classify")


def machine_info() -> dict[str, Any]:
    """CPU model, core count and library versions, for stating where figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def default_image() -> Path:
    """The bundled 640x480 four-face example (regenerated into a temp file when not in a checkout)."""
    repo_copy = Path(__file__).resolve().parents[3] / "examples" / "group.jpg"
    if repo_copy.exists():
        return repo_copy
    from lightfer.examples import group_photo
    from lightfer.io import write_image

    return write_image(Path(tempfile.gettempdir()) / "lightfer_group.jpg", group_photo(), quality=90)


def measure(image: Path, backend: str, threads: int, repeats: int, model: str, warmup: int = 3,
            tta: bool | None = None, precision: str = "auto") -> dict[str, Any]:
    """Run in a fresh process: time each stage ``repeats`` times; returns medians in ms (``tta`` and
    ``precision`` as in :class:`~lightfer.pipeline.Analyzer`: ``None`` = the model's own setting)."""
    import torch

    torch.set_num_threads(threads)
    from lightfer.io import read_image
    from lightfer.pipeline import Analyzer

    analyzer = Analyzer(model, backend=backend, threads=threads, tta=tta, precision=precision)
    samples: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    n_faces = 0
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        rgb = read_image(image)
        t1 = time.perf_counter()
        faces = analyzer.detector.detect(rgb)
        t2 = time.perf_counter()
        crops = analyzer.align(rgb, faces)
        t3 = time.perf_counter()
        analyzer.classifier.predict(crops)
        t4 = time.perf_counter()
        n_faces = len(faces)
        if i >= warmup:
            for s, v in zip((*STAGES, "total"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                samples[s].append(v * 1e3)
    med = {s: statistics.median(v) for s, v in samples.items()}
    return {
        "backend": backend,
        "threads": threads,
        "faces": n_faces,
        "tta_flip": analyzer.classifier.tta_flip,
        "precision": analyzer.classifier.precision,
        "ms": med,
        "faces_per_s": n_faces / (med["total"] / 1e3) if med["total"] > 0 else 0.0,
        "classify_ms_per_face": med["classify"] / max(n_faces, 1),
    }


def run_all(image: Path, backends: list[str], threads: list[int], repeats: int, model: str,
            tta: bool | None = None, precision: str = "auto") -> list[dict[str, Any]]:
    """Measure every (backend, threads) pair, each in its own subprocess."""
    rows = []
    for backend in backends:
        for n in threads:
            cmd = [sys.executable, "-m", "lightfer.eval.benchmark", "--worker", "--image", str(image),
                   "--backend", backend, "--threads", str(n), "--repeats", str(repeats), "--model", model,
                   "--precision", precision]
            if tta is not None:
                cmd.append("--tta" if tta else "--no-tta")
            env = {**os.environ, "OMP_NUM_THREADS": str(n)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"benchmark worker failed ({backend}, {n} threads):\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def format_table(rows: list[dict[str, Any]], info: dict[str, Any], image: Path, repeats: int) -> str:
    """A readable table of the measurements."""
    import cv2

    h, w = cv2.imread(str(image), cv2.IMREAD_REDUCED_COLOR_2).shape[:2]
    lines = [
        f"lightfer benchmark: {image.name} ({w * 2}x{h * 2}, {rows[0]['faces']} faces), median of {repeats} runs, "
        f"flip TTA {'on' if rows[0].get('tta_flip') else 'off'}; classifier in ONNX Runtime: "
        f"{next((r.get('precision', 'fp32') for r in rows if r['backend'] == 'onnx'), 'not run')}",
        f"machine: {info['cpu']}, {info['cores']} cores; python {info['python']}, torch {info['torch']}, "
        f"onnxruntime {info['onnxruntime']}",
        "",
        f"{'backend':8s} {'threads':>7s} " + " ".join(f"{s + ' ms':>11s}" for s in (*STAGES, "total"))
        + f" {'faces/s':>8s} {'ms/face cls':>11s}",
    ]
    for r in rows:
        ms = r["ms"]
        lines.append(
            f"{r['backend']:8s} {r['threads']:7d} " + " ".join(f"{ms[s]:11.2f}" for s in (*STAGES, "total"))
            + f" {r['faces_per_s']:8.1f} {r['classify_ms_per_face']:11.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Worker entry (``--worker``) used by :func:`run_all`."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--image", required=True)
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--precision", default="auto")
    a = ap.parse_args(argv)
    print(json.dumps(measure(Path(a.image), a.backend, a.threads, a.repeats, a.model, tta=a.tta,
                             precision=a.precision)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
