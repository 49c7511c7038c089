"""Feature-name cardinality: what never-repeating feature names cost the model, in-process.

    python -m bench.cardinality                          # this tree, 500,000 distinct names
    python -m bench.cardinality --against /tmp/before    # two trees, same run

A client that uses ids or timestamps as feature names sends names that never repeat. This
runs the service's trainer configuration (`service.settings` defaults) on a normal stream
first (12 numeric features, the throughput benchmark's events) and records the snapshot
size, then learns `--names` distinct numeric names (50 per event, in the service's
micro-batches of 64 events, as issue 16's probe sent them) and records the growth of the
process's resident memory, the snapshot size, and the time of `to_bytes` and `from_bytes`
(a checkpoint and a reload). Each tree runs in its own fresh process (its source tree first
on `PYTHONPATH`), so memory figures do not mix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.trees import run_in_tree, tree_parser, trees_of

# Runs in the child; uses only what every tree has (StreamTrainer, service Settings,
# bench.throughput.make_events).
_CHILD = """
import gc, json, random, sys, time
from bench.throughput import make_events
from models.trainer import StreamTrainer
from service.settings import Settings

def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0

n_names, per_event, batch = int(sys.argv[1]), 50, 64
classes = ["legit", "fraud"]
trainer = StreamTrainer(Settings(classes=classes).trainer_config())
normal = make_events(5_000, seed=0)
for i in range(0, len(normal), batch):
    part = normal[i : i + batch]
    trainer.process([e["features"] for e in part], [e["label"] for e in part])
out = {"normal_snapshot_bytes": len(trainer.to_bytes())}
gc.collect()
rss0 = rss_mib()
rng = random.Random(1)
n_events = n_names // per_event
t0 = time.perf_counter()
for start in range(0, n_events, batch):
    rows = range(start, min(start + batch, n_events))
    feats = [{f"id{i}_{k}": rng.gauss(0.0, 1.0) for k in range(per_event)} for i in rows]
    labels = [1 if rng.random() < 0.02 else 0 for _ in rows]
    trainer.process(feats, labels)
out["learn_s"] = time.perf_counter() - t0
gc.collect()
out["rss_growth_mib"] = rss_mib() - rss0
t0 = time.perf_counter()
data = trainer.to_bytes()
out["to_bytes_s"] = time.perf_counter() - t0
out["snapshot_bytes"] = len(data)
t0 = time.perf_counter()
StreamTrainer.from_bytes(data)
out["from_bytes_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""

FIELDS = (
    ("normal_snapshot_bytes", "snapshot after 5,000 normal events (bytes)", "{:,.0f}"),
    ("rss_growth_mib", "resident memory growth over the distinct names (MiB)", "{:.1f}"),
    ("snapshot_bytes", "snapshot after the distinct names (bytes)", "{:,.0f}"),
    ("to_bytes_s", "to_bytes (s)", "{:.3f}"),
    ("from_bytes_s", "from_bytes (s)", "{:.3f}"),
    ("learn_s", "learning the distinct names (s)", "{:.1f}"),
)


def render(results: dict[Path, dict[str, float]], names: int, load: float) -> str:
    trees = list(results)
    head = ["measure", *(t.name or str(t) for t in trees)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, fmt in FIELDS:
        cells = [label, *(fmt.format(results[t][key]) for t in trees)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"\n{names:,} distinct numeric names, 50 per event, batches of 64; load average at "
        f"start {load:.2f}, {os.cpu_count()} CPUs."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = tree_parser("python -m bench.cardinality", __doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=500_000)
    args = parser.parse_args(argv)
    if args.names < 50:
        parser.error("--names must be >= 50")
    trees = trees_of(parser, args)
    load = os.getloadavg()[0]
    results = {}
    for tree in trees:
        results[tree] = run_in_tree(tree, _CHILD, str(args.names))
        print(f"{tree}: {results[tree]}", file=sys.stderr, flush=True)
    print(render(results, args.names, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
