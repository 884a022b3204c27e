"""Loopback load run for ``lightfer serve --bench``: N requests at concurrency C, latency percentiles.

Start a server in a child process (so the client does not share its interpreter), post one image
``requests`` times from ``concurrency`` client tasks, and report p50/p90/p99 latency, throughput and
the errors: any non-200 answer, transport failure, or an answer whose faces differ from the first
one (the same image must always give the same result, however many requests share the model).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(kw_only=True)
class LoadReport:
    """What a load run measured (latencies in milliseconds, client side, whole HTTP round trip)."""

    url: str
    requests: int
    concurrency: int
    ok: int = 0
    errors: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)  # "200" / "503" / "exception: ..." -> count
    faces: int | None = None  # faces in the first answer
    wall_s: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0
    first_errors: list[str] = field(default_factory=list)  # up to 5 messages

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """Human-readable lines."""
        return (
            f"{self.requests} requests, concurrency {self.concurrency}, {self.url}\n"
            f"  latency ms: p50 {self.p50_ms:.1f}  p90 {self.p90_ms:.1f}  p99 {self.p99_ms:.1f}  "
            f"mean {self.mean_ms:.1f}  max {self.max_ms:.1f}\n"
            f"  throughput {self.throughput_rps:.1f} req/s over {self.wall_s:.1f} s; faces per answer {self.faces}\n"
            f"  errors {self.errors}  (status counts {json.dumps(self.status_counts)})"
            + "".join(f"\n  error: {e}" for e in self.first_errors)
        )


def _face_signature(body: dict[str, Any]) -> tuple:
    return tuple((f["label"], tuple(round(v) for v in f["box"])) for f in body.get("faces", []))


async def _run(url: str, image: bytes, filename: str, requests: int, concurrency: int,
               params: dict[str, Any], timeout: float) -> LoadReport:
    import httpx

    report = LoadReport(url=url, requests=requests, concurrency=concurrency)
    latencies: list[float] = []
    reference: list[tuple] = []
    next_index = 0

    def record(key: str, message: str | None = None) -> None:
        report.status_counts[key] = report.status_counts.get(key, 0) + 1
        if message is not None:
            report.errors += 1
            if len(report.first_errors) < 5:
                report.first_errors.append(message)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests:
            next_index += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/analyze", params=params,
                                      files={"file": (filename, image, "application/octet-stream")})
            except Exception as exc:  # transport errors are results here
                record(f"exception: {type(exc).__name__}", f"{type(exc).__name__}: {exc}")
                continue
            latencies.append((time.perf_counter() - t0) * 1e3)
            if r.status_code != 200:
                record(str(r.status_code), f"HTTP {r.status_code}: {r.text[:200]}")
                continue
            sig = _face_signature(r.json())
            if not reference:
                reference.append(sig)
                report.faces = len(sig)
            if sig != reference[0]:
                record("200-mismatch", f"answer differs from the first one: {sig} != {reference[0]}")
                continue
            record("200")
            report.ok += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        report.wall_s = time.perf_counter() - t0
    if latencies:
        lat = np.asarray(latencies)
        report.p50_ms, report.p90_ms, report.p99_ms = (float(np.percentile(lat, q)) for q in (50, 90, 99))
        report.mean_ms, report.max_ms = float(lat.mean()), float(lat.max())
    report.throughput_rps = requests / report.wall_s if report.wall_s else 0.0
    return report


def run_load(url: str, image: bytes, *, filename: str = "bench.jpg", requests: int = 500, concurrency: int = 8,
             params: dict[str, Any] | None = None, timeout: float = 60.0) -> LoadReport:
    """Post ``image`` to ``url``/v1/analyze ``requests`` times from ``concurrency`` concurrent clients."""
    if requests < 1 or concurrency < 1:
        raise ValueError(f"requests and concurrency must be >= 1, got {requests} and {concurrency}")
    return asyncio.run(_run(url.rstrip("/"), image, filename, requests, concurrency, params or {}, timeout))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0) -> None:
    """Poll ``url``/health until it answers 200; raises RuntimeError when the server died or never came up."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering /health")
        try:
            r = httpx.get(f"{url}/health", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}"
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not healthy after {timeout:.0f} s ({last})")


def start_server(port: int, extra_args: list[str] | None = None, *, threads: int | None = None,
                 log_path: str | os.PathLike | None = None) -> subprocess.Popen:
    """``lightfer serve --port PORT`` in a child process on 127.0.0.1 (stop it with ``terminate()``)."""
    entry = "import sys; from lightfer.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", entry, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    cmd += list(extra_args or [])
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            out.close()
