"""CPU time per request of the service, built from two (or more) source trees, alternating.

On a shared machine req/s moves with everyone else's load; the CPU time the service process
spends per answered request moves far less, so it is the measure for "did this change make
the service cheaper". Each tree's service is started on its own embedded Redis, learns a
warm-up of 5,000 events, then gets `--duration` seconds of one benchmark load (wrk, as in
`bench.throughput`); its CPU time (utime + stime from /proc) is read before and after, and
after the learner has caught up for the learning loads. Trees take turns, round by round.

    git worktree add /tmp/before <commit>
    python -m bench.cpu_ab /tmp/before . --load predict_get --load learn_single --rounds 2

A tree is served with its own code (`PYTHONPATH` and working directory), on this
environment's packages: an old tree that needs a package this one dropped needs it
installed for the comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import throughput as tp
from bench.loadgen import run_load

LOADS = {
    # name: (requests builder, connections)
    "predict_get": (tp.predict_get_requests, 16),
    "learn_single": (tp.learn_single_requests, 16),
    "predict_post": (lambda events: tp.predict_post_requests(events, 100), 1),
    "learn_batch": (lambda events: tp.learn_batch_requests(events, 500), 4),
}


def cpu_per_request(
    tree: Path, load: str, events: list[dict], duration_s: float, data_dir: Path
) -> tuple[float, float]:
    """(µs of service CPU per request, req/s) for one run of `load` against `tree`."""
    build, connections = LOADS[load]
    server = tp.service_server(data_dir, tree=tree)
    server.start()
    try:
        warm = tp.learn_batch_requests(events[:5000], 500)
        run_load(server.url, warm, connections=4, duration_s=1.0)
        tp.settle(server)
        before = tp.cpu_seconds(server.pid)
        result = run_load(server.url, build(events), connections=connections, duration_s=duration_s)
        if load.startswith("learn"):
            tp.settle(server)  # the learning the requests caused is part of their cost
        used = tp.cpu_seconds(server.pid) - before
    finally:
        server.stop()
    return 1e6 * used / max(1, result.requests), result.rps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees to compare")
    parser.add_argument("--load", action="append", choices=sorted(LOADS), dest="loads")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in args.trees]
    for tree in trees:
        if tp.app_factory_of(tree) is None:
            parser.error(f"{tree}: not a streambalance source tree (no service app)")
    loads = args.loads or ["predict_get", "learn_single", "predict_post"]
    events = tp.make_events(20_000)
    runs: dict[tuple[str, Path], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="sb-ab-") as tmp:
        for rnd in range(args.rounds):
            for load in loads:
                order = trees if rnd % 2 == 0 else trees[::-1]
                for i, tree in enumerate(order):
                    data_dir = Path(tmp) / f"{rnd}-{load}-{i}"
                    us, rps = cpu_per_request(tree, load, events, args.duration, data_dir)
                    runs.setdefault((load, tree), []).append(us)
                    print(
                        f"round {rnd + 1} {load:13s} {tree}: {us:7.0f} µs/request, "
                        f"{rps:7.0f} req/s"
                    )
    print("\n| load | " + " | ".join(str(t) for t in trees) + " |")
    print("|---|" + "---|" * len(trees))
    for load in loads:
        cells = [f"{statistics.median(runs[(load, t)]):.0f} µs" for t in trees]
        print(f"| {load} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
