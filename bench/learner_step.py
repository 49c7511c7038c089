"""The learner step alone against river, in seconds: the info rows of `bench.throughput`.

    python -m bench.learner_step                               # this tree
    python -m bench.learner_step --against /tmp/before         # two trees, alternating

Each measurement runs in a fresh process with one source tree first on `PYTHONPATH`, so
two trees are compared on the same machine state: rounds alternate which tree goes
first, and every process measures river (StandardScaler | LogisticRegression,
predict_proba_one then learn_one) next to `StreamTrainer.process` on the same events,
so each ours/river ratio comes from one process. Rows: micro-batches of 256 events with
torch's default threads and with one thread, and of 64 events (the service's
`batch_max_size`) with one thread; then the model's side of the serving path,
`StreamTrainer.predict` of a trained model on one event and on 100-event batches
(events/s). The table gives medians over rounds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.trees import run_in_tree, tree_parser, trees_of

# Run in the child with the tree under test first on sys.path: only functions that every
# tree's bench.throughput has had (make_events, river_events_per_s, trainer_events_per_s).
_CHILD = """
import json, sys
from bench.throughput import make_events, river_events_per_s, trainer_events_per_s
n = int(sys.argv[1])
events = make_events(n, seed=0)
out = {"river": river_events_per_s(events)}
out["256"] = trainer_events_per_s(events, batch=256)
out["256/1t"] = trainer_events_per_s(events, batch=256, threads=1)
out["64/1t"] = trainer_events_per_s(events, batch=64, threads=1)
# The model's side of the serving path: StreamTrainer.predict (featurize, forward pass,
# calibrate, decide) of a trained model, one event and 100-event batches.
import time, torch
from models.trainer import StreamTrainer
from service.settings import Settings
torch.set_num_threads(1)
trainer = StreamTrainer(Settings(classes=["legit", "fraud"]).trainer_config())
feats = [e["features"] for e in events]
for i in range(0, n // 2, 64):
    trainer.process(feats[i : i + 64], [e["label"] for e in events[i : i + 64]])
probe = feats[n // 2 :]
for size in (1, 100):
    t0, done = time.perf_counter(), 0
    for i in range(0, len(probe) - size + 1, size):
        trainer.predict(probe[i : i + size])
        done += size
    out[f"predict{size}"] = done / (time.perf_counter() - t0)
print(json.dumps(out))
"""

# (key, label, compared with river)
ROWS = (
    ("256", "StreamTrainer.process, 256-event batches, torch default threads", True),
    ("256/1t", "the same with torch.set_num_threads(1)", True),
    ("64/1t", "64-event batches (the service's batch_max_size), one thread", True),
    ("predict1", "StreamTrainer.predict of one event (calibrated, decided)", False),
    ("predict100", "StreamTrainer.predict of 100-event batches", False),
)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


def render(runs: dict[Path, list[dict[str, float]]], load: float) -> str:
    """A Markdown table: per tree and row, median events/s and median per-run ratio to river;
    with two trees, the median of per-round ratios of the last tree to the first."""
    trees = list(runs)
    head = ["row", *(f"{t.name or t} ev/s (x river)" for t in trees)]
    if len(trees) == 2:
        head.append(f"{trees[1].name} / {trees[0].name}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    river = ["river in-process", *(f"{_median([r['river'] for r in runs[t]]):,.0f}" for t in trees)]
    if len(trees) == 2:
        river.append("")
    lines.append("| " + " | ".join(river) + " |")
    for key, label, vs_river in ROWS:
        cells = [label]
        for t in trees:
            eps = _median([r[key] for r in runs[t]])
            ratio = _median([r[key] / r["river"] for r in runs[t]])
            cells.append(f"{eps:,.0f} ({ratio:.2f}x)" if vs_river else f"{eps:,.0f}")
        if len(trees) == 2:
            pairs = zip(runs[trees[1]], runs[trees[0]], strict=True)
            cells.append(f"{_median([b[key] / a[key] for b, a in pairs]):.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    rounds = len(runs[trees[0]])
    lines.append(f"\n{rounds} round(s); load average at start {load:.2f}, {os.cpu_count()} CPUs.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = tree_parser("python -m bench.learner_step", __doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.events < 1024:
        parser.error("--rounds must be >= 1 and --events >= 1024")
    trees = trees_of(parser, args)
    load = os.getloadavg()[0]
    runs: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    for rnd in range(args.rounds):
        for tree in trees if rnd % 2 == 0 else trees[::-1]:
            runs[tree].append(run_in_tree(tree, _CHILD, str(args.events)))
            print(f"round {rnd + 1}: {tree}: {runs[tree][-1]}", file=sys.stderr, flush=True)
    print(render(runs, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
