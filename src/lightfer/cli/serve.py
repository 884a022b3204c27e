"""``lightfer serve``: the HTTP API and web page (``--bench``: a loopback load run against it)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lightfer.defaults import DEFAULT_MODEL

EPILOG = """examples:
  lightfer serve                                   # http://127.0.0.1:8000  (page at /, API docs at /docs)
  lightfer serve --port 9000 --threads 2 --max-upload-mb 5
  lightfer serve --no-tta                          # no mirror averaging unless a request asks ?tta=true
  curl -F file=@photo.jpg http://127.0.0.1:8000/v1/analyze
  curl -F file=@photo.jpg 'http://127.0.0.1:8000/v1/analyze?score_threshold=0.8&annotate=true'
  curl -F file=@clip.mp4 'http://127.0.0.1:8000/v1/analyze/video?fps=5'
  lightfer serve --bench                           # 500 requests at concurrency 8 on a loopback server
  lightfer serve --bench --url http://127.0.0.1:8000 --requests 200 --image photo.jpg
the server listens on the loopback interface only unless --host says otherwise; it has no
authentication, so expose it (--host 0.0.0.0) only on a network you trust."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` verb."""
    p = sub.add_parser(
        "serve",
        help="HTTP API and web page",
        description="Serve POST /v1/analyze (image -> the JSON of `lightfer predict`), POST /v1/analyze/video, "
        "GET /v1/models, GET /health, OpenAPI docs at /docs and a web page at / (file, drop or webcam). "
        "Needs the serve extra: pip install 'lightfer[serve]'.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="default expression model (see GET /v1/models)")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx",
                   help="inference engine: ONNX Runtime (CPU default) or PyTorch")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime; default: all cores)")
    p.add_argument("--workers", type=int, default=2, help="inference threads (default 2)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average each face with its mirror image for every request that does not say ?tta= "
                   "(default: each model's own setting, as its published numbers were measured)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image upload, MB (default 10)")
    g.add_argument("--max-pixels", type=float, default=25e6, help="largest image, width x height (default 25e6)")
    g.add_argument("--max-video-mb", type=float, default=50.0, help="largest video upload, MB (default 50)")
    g.add_argument("--max-video-seconds", type=float, default=30.0, help="longest clip, s (default 30)")
    g.add_argument("--max-video-frames", type=int, default=300, help="frames analysed per clip at most (default 300)")
    g.add_argument("--timeout", type=float, default=30.0, help="image request timeout, s (504 after; default 30)")
    g.add_argument("--video-timeout", type=float, default=120.0, help="video request timeout, s (default 120)")
    g.add_argument("--max-pending", type=int, default=32, help="analyses queued at once; more get 503 (default 32)")
    p.add_argument("--no-preload", action="store_true", help="load the model on the first request, not at start-up")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    b = p.add_argument_group("load run (--bench)")
    b.add_argument("--bench", action="store_true", help="run a loopback load test instead of serving, print p50/p99 "
                   "latency and the error count; exit 1 if any request failed")
    b.add_argument("--url", help="bench an already running server instead of starting one")
    b.add_argument("--requests", type=int, default=500, help="requests to send (default 500)")
    b.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default 8)")
    b.add_argument("--warmup", type=int, default=10, help="untimed requests sent first, one at a time (default 10)")
    b.add_argument("--image", help="image to post (default: the bundled 640x480 four-face example)")
    b.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):  # -> ServiceConfig
    from lightfer.service.config import ServiceConfig

    return ServiceConfig(
        default_model=args.model,
        backend=args.backend,
        threads=args.threads,
        tta=args.tta,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_pixels),
        max_video_bytes=int(args.max_video_mb * 1024 * 1024),
        max_video_seconds=args.max_video_seconds,
        max_video_frames=args.max_video_frames,
        request_timeout_s=args.timeout,
        video_timeout_s=args.video_timeout,
        workers=args.workers,
        max_pending=args.max_pending,
        preload=not args.no_preload,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (or run the load test with ``--bench``)."""
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.bench:
        return _bench(args)
    try:
        import uvicorn

        from lightfer.service.app import create_app
    except ImportError as exc:
        print(f"error: {exc.name} is missing; install the serve extra: pip install 'lightfer[serve]'", file=sys.stderr)
        return 1
    from lightfer.cli.common import set_threads
    from lightfer.service.config import LOOPBACK_HOSTS

    set_threads(args.threads)
    if args.host not in LOOPBACK_HOSTS:
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the service "
              "(there is no authentication)", file=sys.stderr)
    app = create_app(config)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"lightfer serve: http://{shown}:{args.port}/  (API docs at /docs; Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                limit_concurrency=max(64, 2 * config.max_pending), timeout_keep_alive=10)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from lightfer.service.load_test import free_port, run_load, start_server, wait_healthy

    if args.image:
        image_path = Path(args.image)
    else:
        from lightfer.eval.benchmark import default_image

        image_path = default_image()
    if not image_path.is_file():
        print(f"error: {image_path}: no such file", file=sys.stderr)
        return 1
    image = image_path.read_bytes()
    proc = None
    url = args.url
    try:
        if url is None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            forwarded = ["--model", args.model, "--backend", args.backend, "--workers", str(args.workers),
                         "--log-level", "warning",
                         "--max-pending", str(max(args.max_pending, args.concurrency))]
            if args.tta is not None:
                forwarded.append("--tta" if args.tta else "--no-tta")
            proc = start_server(port, forwarded, threads=args.threads)
            try:
                wait_healthy(url, proc)
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        print(f"warming up, then {args.requests} requests at concurrency {args.concurrency} "
              f"posting {image_path.name} to {url}", file=sys.stderr)
        if args.warmup > 0:
            run_load(url, image, filename=image_path.name, requests=args.warmup, concurrency=1)
        report = run_load(url, image, filename=image_path.name, requests=args.requests,
                          concurrency=args.concurrency)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except Exception:
                proc.kill()
    print(report.summary())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"image": str(image_path), **report.to_dict()}, indent=1) + "\n")
    return 0 if report.errors == 0 else 1
