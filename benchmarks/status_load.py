"""Status-server load against the frame loop: frames/s with and without clients hammering /metrics.

One process runs the pipeline (``synthetic:traffic-signs``, the bundled model, no sinks) with the
status server on a loopback port; a second process runs ``--clients`` threads that request
``--path`` as fast as the server answers (no pause between requests). Phases of ``--seconds``
alternate in one run, so the ratios hold on a noisy machine:

- ``quiet``: nobody asks the server anything;
- ``load``: the clients against the server as configured by default (page cache, request rate
  and connection caps, request deadline);
- ``load, no limits`` (with ``--compare``): the same clients against the server with the cache
  and the caps turned off, i.e. one render per request and a thread per connection, as the
  server was before it had them.

Each figure is the median over ``--rounds`` phases; the ratio is a loaded median over the quiet
one. ``--cpus 0,1`` pins both processes to those cores (the figures in docs/benchmarks.md are
from a 2-core machine).

    python benchmarks/status_load.py --compare
    python benchmarks/status_load.py --clients 50 --seconds 4 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.model import load_model, options_from_profile  # noqa: E402
from edge_runtime.pipeline import Pipeline  # noqa: E402
from edge_runtime.service.status_server import StatusServer  # noqa: E402
from edge_runtime.sources import open_source  # noqa: E402
from edge_runtime.status import RuntimeStatus  # noqa: E402

# The load generator, run in its own interpreter so that its threads do not share our GIL.
CLIENTS = textwrap.dedent(
    """
    import collections, json, sys, threading, time, urllib.error, urllib.request
    url, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    counts = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    def hammer():
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    response.read()
                    outcome = str(response.status)
            except urllib.error.HTTPError as exc:
                outcome = str(exc.code)
            except OSError as exc:
                outcome = type(exc).__name__
            with lock:
                counts[outcome] += 1
    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 15)
    print(json.dumps(dict(counts)))
    """
)

NO_LIMITS: dict[str, Any] = {
    "refresh_s": 0.0,
    "max_requests_per_s": 0.0,
    "max_connections": 1_000_000,
}


def frames_per_second(status: RuntimeStatus, seconds: float) -> float:
    start_frames, start = status.frames, time.perf_counter()
    time.sleep(seconds)
    return (status.frames - start_frames) / (time.perf_counter() - start)


def loaded_phase(
    status: RuntimeStatus, url: str, clients: int, seconds: float
) -> tuple[float, dict[str, int]]:
    """Frames/s while the client process runs; its responses by outcome."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(
        [sys.executable, "-c", CLIENTS, url, str(clients), str(seconds + 1.0)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the clients start and reach their pace
    fps = frames_per_second(status, seconds)
    out, _ = process.communicate(timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    counts = json.loads(out or "{}")
    counts["client_cpu_s"] = round(
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2
    )
    return fps, counts


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    options = options_from_profile(None, threads=args.threads)
    model = load_model(ROOT / args.model, options=options)
    defaults: dict[str, Any] = {}
    if args.rate is not None:
        defaults["max_requests_per_s"] = args.rate
    modes: dict[str, dict[str, Any]] = {"load": defaults}
    if args.compare:
        modes["load, no limits"] = NO_LIMITS
    results: dict[str, Any] = {"quiet": [], **{mode: [] for mode in modes}}
    responses: dict[str, list[dict[str, int]]] = {mode: [] for mode in modes}
    for mode, settings in modes.items():
        status = RuntimeStatus()
        source = open_source("synthetic:traffic-signs")
        with StatusServer(status, port=0, **settings) as server:
            pipeline = Pipeline(source, model, model.postprocessor(), status=status)
            runner = threading.Thread(target=pipeline.run, daemon=True)
            runner.start()
            time.sleep(1.0)  # warm up: first frames, caches, the XNNPACK delegate
            for _ in range(args.rounds):
                results["quiet"].append(frames_per_second(status, args.seconds))
                fps, counts = loaded_phase(
                    status, server.url + args.path, args.clients, args.seconds
                )
                results[mode].append(fps)
                responses[mode].append(counts)
            pipeline.stop()
            runner.join(10)
    quiet = statistics.median(results["quiet"])
    summary: dict[str, Any] = {
        "clients": args.clients,
        "path": args.path,
        "seconds_per_phase": args.seconds,
        "rounds": args.rounds,
        "cpus": args.cpus or f"all ({os.cpu_count()})",
        "quiet_fps": round(quiet, 1),
    }
    for mode in modes:
        loaded = statistics.median(results[mode])
        total: dict[str, float] = {}
        for counts in responses[mode]:
            for outcome, count in counts.items():
                total[outcome] = total.get(outcome, 0) + count
        client_cpu = total.pop("client_cpu_s", 0.0)
        span = (args.seconds + 1.0) * args.rounds
        summary[mode] = {
            "fps": round(loaded, 1),
            "ratio": round(loaded / quiet, 3),
            "requests_per_s": round(sum(total.values()) / span),
            "responses": total,
            "client_cpu_share": round(client_cpu / span, 3),
        }
    model.close()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/traffic-signs")
    parser.add_argument("--threads", type=int, default=1, help="inference threads (1)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--path", default="/metrics")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="phases of each kind")
    parser.add_argument("--cpus", help="pin to these cores, e.g. 0,1")
    parser.add_argument("--compare", action="store_true", help="also run without the limits")
    parser.add_argument("--rate", type=float, help="the server's max_requests_per_s (default's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary = measure(args)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"{args.clients} unpaced clients on {args.path}, {args.rounds} x {args.seconds:g} s "
        f"phases, cpus {summary['cpus']}"
    )
    print(f"  quiet: {summary['quiet_fps']:.1f} frames/s")
    for mode in ("load", "load, no limits"):
        if mode in summary:
            row = summary[mode]
            print(
                f"  {mode}: {row['fps']:.1f} frames/s = {row['ratio']:.2f} x quiet; "
                f"{row['requests_per_s']} requests/s answered {row['responses']}; the "
                f"clients used {row['client_cpu_share']:.2f} of a core"
            )


if __name__ == "__main__":
    main()
