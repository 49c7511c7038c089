"""Benchmark measures (pure numpy), aggregation over seeds, the Markdown table and the plots.

Binary streams score the minority (class 1, the class whose share is scheduled); multi-class
streams average one-vs-rest over the minority classes (every class but 0). All measures are
prequential: each event is scored by a model that had not yet learned from it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.contenders import RunOutput
from bench.streams import Stream

#: Rolling window for the G-mean curves and the recovery measure, as a fraction of the stream
#: (5,000 events at 200k: about 50 minority events at 1%).
WINDOW_FRACTION = 1 / 40
MIN_WINDOW = 500
#: Recovery needs this many events of each class in the post-drift window before it is judged.
MIN_CLASS_EVENTS = 5
RECOVERY_TOLERANCE = 0.05


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), NaN if one class is absent.

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    >>> roc_auc(np.array([0, 1]), np.array([0.5, 0.5]))
    0.5
    """
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over runs of tied scores
    boundaries = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(s)]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over thresholds of (recall step) x precision; tied scores
    form one threshold. NaN if there is no positive.

    >>> round(average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])), 4)
    0.8333
    >>> average_precision(np.array([1, 0, 1]), np.array([0.9, 0.1, 0.8]))
    1.0
    """
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s = np.asarray(score)[order]
    hits = y[order]
    last = np.concatenate((np.flatnonzero(np.diff(s)), [len(s) - 1]))  # end of each tie run
    tps = np.cumsum(hits)[last]
    precision = tps / (last + 1)
    recall_steps = np.diff(np.concatenate(([0], tps))) / n_pos
    return float((recall_steps * precision).sum())


def class_recall_precision(
    y: np.ndarray, pred: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class recall and precision (NaN where undefined).

    >>> r, p = class_recall_precision(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    >>> r.tolist(), [round(float(v), 3) for v in p]
    ([0.5, 1.0], [1.0, 0.667])
    """
    recall = np.full(k, math.nan)
    precision = np.full(k, math.nan)
    for c in range(k):
        actual, decided = y == c, pred == c
        hit = float(np.sum(actual & decided))
        if actual.any():
            recall[c] = hit / actual.sum()
        if decided.any():
            precision[c] = hit / decided.sum()
    return recall, precision


def g_mean(recalls: Sequence[float] | np.ndarray) -> float:
    """Geometric mean of per-class recalls (classes absent from the data are left out).

    >>> g_mean([0.25, 1.0])
    0.5
    """
    r = np.asarray([v for v in recalls if not math.isnan(v)], dtype=np.float64)
    return float(np.prod(r) ** (1.0 / len(r))) if len(r) else math.nan


def macro_f1(recall: np.ndarray, precision: np.ndarray) -> float:
    """Mean per-class F1; a class never decided (precision undefined) scores 0.

    >>> macro_f1(np.array([1.0, 0.5]), np.array([0.5, 1.0]))
    0.6666666666666666
    """
    f1 = []
    for r, p in zip(recall, precision, strict=True):
        if math.isnan(r):
            continue
        f1.append(0.0 if math.isnan(p) or r + p == 0 else 2 * r * p / (r + p))
    return float(np.mean(f1)) if f1 else math.nan


def _window(n: int) -> int:
    return max(MIN_WINDOW, int(n * WINDOW_FRACTION))


def _class_cumsums(y: np.ndarray, pred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative per-class counts of events and hits, with a leading zero row: [n+1, k]."""
    onehot = np.zeros((len(y), k), dtype=np.int64)
    onehot[np.arange(len(y)), y] = 1
    hit = onehot * (pred == y)[:, None]
    zero = np.zeros((1, k), dtype=np.int64)
    return np.vstack([zero, np.cumsum(onehot, 0)]), np.vstack([zero, np.cumsum(hit, 0)])


def _gmean_between(
    counts: np.ndarray, hits: np.ndarray, lo: np.ndarray, hi: np.ndarray, min_events: int = 1
) -> np.ndarray:
    """G-mean over events [lo, hi) for arrays of windows; NaN where a class has < min_events."""
    n_c = counts[hi] - counts[lo]
    h_c = hits[hi] - hits[lo]
    present = counts[-1] > 0  # classes the stream has at all
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = h_c / n_c
    rec = rec[:, present]
    ok = (n_c[:, present] >= min_events).all(axis=1)
    out = np.prod(rec, axis=1) ** (1.0 / max(1, int(present.sum())))
    out[~ok] = math.nan
    return out


def rolling_gmean(
    y: np.ndarray, pred: np.ndarray, k: int, points: int = 400
) -> tuple[list[int], list[float | None]]:
    """G-mean over a trailing window, evaluated at ``points`` evenly spaced positions."""
    counts, hits = _class_cumsums(y, pred, k)
    n, w = len(y), _window(len(y))
    ends = np.unique(np.linspace(w, n, points).astype(np.int64))
    values = _gmean_between(counts, hits, ends - w, ends)
    return ends.tolist(), [None if math.isnan(v) else round(float(v), 4) for v in values]


def recovery(
    y: np.ndarray, pred: np.ndarray, k: int, drift_points: Sequence[int], step: int = 50
) -> list[dict]:
    """For each drift: events until the rolling G-mean is within 5% of its pre-drift level.

    The pre-drift level is the G-mean over the window just before the drift. After it, the
    window holds post-drift events only (growing up to the window size) and is judged once it
    has ``MIN_CLASS_EVENTS`` of each class, so the best possible answer is the time needed to
    see that many minority events. ``events`` is None if it never recovers before the next
    drift (or the end); ``censored_at`` then says how long it had.
    """
    counts, hits = _class_cumsums(y, pred, k)
    n, w = len(y), _window(len(y))
    bounds = [*drift_points, n]
    out = []
    for i, t0 in enumerate(drift_points):
        t_end = bounds[i + 1]
        pre = _gmean_between(counts, hits, np.array([max(0, t0 - w)]), np.array([t0]))[0]
        ends = np.arange(t0 + step, t_end + 1, step)
        lo = np.maximum(t0, ends - w)
        post = _gmean_between(counts, hits, lo, ends, MIN_CLASS_EVENTS)
        target = (1.0 - RECOVERY_TOLERANCE) * pre
        ok = np.flatnonzero(post >= target) if not math.isnan(pre) else np.array([], int)
        out.append(
            {
                "drift_at": int(t0),
                "pre_gmean": None if math.isnan(pre) else round(float(pre), 4),
                "events": int(ends[ok[0]] - t0) if len(ok) else None,
                "censored_at": int(t_end - t0),
            }
        )
    return out


def stability(grad_norms: Sequence[float]) -> dict:
    """Coefficient of variation and max/median ratio of per-step gradient norms (finite ones).

    >>> stability([1.0, 1.0, 4.0])["max_median"]
    4.0
    """
    g = np.asarray([v for v in grad_norms if math.isfinite(v)], dtype=np.float64)
    if len(g) == 0 or g.mean() == 0:
        return {"grad_cv": math.nan, "max_median": math.nan, "spikes": 0}
    median = float(np.median(g))
    return {
        "grad_cv": float(g.std() / g.mean()),
        "max_median": float(g.max() / median) if median > 0 else math.inf,
        "spikes": int(np.sum(g > 10 * median)),  # steps with a norm over 10x the median
    }


def weekly_measures(stream: Stream, out: RunOutput) -> dict:
    """Average precision and G-mean from the second week on (where the weekly batch forest
    scores too), and the average precision of every week."""
    from bench.contenders import week_index

    assert stream.timestamps is not None
    week = week_index(stream.timestamps)
    y, k = stream.labels, len(stream.classes)
    later = week >= 1
    per_week = []
    for w in range(int(week.max()) + 1):
        sel = week == w
        per_week.append(average_precision(y[sel] == 1, out.probs[sel, 1]) if k == 2 else math.nan)
    recall, _ = class_recall_precision(y[later], out.y_pred[later], k)
    return {
        "avg_precision_1w": average_precision(y[later] == 1, out.probs[later, 1])
        if k == 2
        else math.nan,
        "g_mean_1w": g_mean(recall),
        "weekly_ap": [None if math.isnan(v) else round(float(v), 4) for v in per_week],
    }


def _subsample(rows: list, points: int) -> tuple[list[int], list]:
    if not rows:
        return [], []
    idx = np.unique(np.linspace(0, len(rows) - 1, min(points, len(rows))).astype(int))
    return idx.tolist(), [rows[i] for i in idx]


def measure(stream: Stream, out: RunOutput) -> dict:
    """Every per-run measure, plus the compact curves the plots need."""
    y, pred, k = stream.labels, out.y_pred, len(stream.classes)
    recall, precision = class_recall_precision(y, pred, k)
    minority = list(range(1, k))
    aucs = [roc_auc(y == c, out.probs[:, c]) for c in minority]
    aps = [average_precision(y == c, out.probs[:, c]) for c in minority]
    rec = recovery(y, pred, k, stream.drift_points)
    recovered = [r["events"] for r in rec if r["events"] is not None]
    result = {
        "roc_auc": float(np.nanmean(aucs)),
        "avg_precision": float(np.nanmean(aps)),
        "g_mean": g_mean(recall),
        "minority_recall": float(np.nanmean(recall[1:])),
        "minority_precision": float(np.nanmean(precision[1:]))
        if np.isfinite(precision[1:]).any()
        else 0.0,
        "macro_f1": macro_f1(recall, precision),
        "per_class_recall": [None if math.isnan(v) else float(v) for v in recall],
        "per_class_precision": [None if math.isnan(v) else float(v) for v in precision],
        "recovery": rec,
        "recovery_mean": float(np.mean(recovered)) if recovered else None,
        "not_recovered": sum(r["events"] is None for r in rec) if rec else None,
        "events": stream.n,
        "events_per_s": stream.n / out.seconds if out.seconds > 0 else math.nan,
        "seconds": out.seconds,
    }
    if stream.timestamps is not None:
        result.update(weekly_measures(stream, out))
    if out.grad_norms:
        result.update(stability(out.grad_norms))
        result["skipped_steps"] = out.skipped_steps
        result["clipped_steps"] = out.clipped_steps
        result["steps"] = len(out.grad_norms)
    ends, values = rolling_gmean(y, pred, k)
    curves: dict[str, object] = {"gmean_at": ends, "gmean": values}
    if out.factors:
        idx, factors = _subsample(out.factors, 300)
        curves["factor_at"] = [out.step_events[i] for i in idx]
        curves["factors"] = [[round(v, 4) for v in f] for f in factors]
        curves["frequencies"] = [[round(v, 6) for v in out.frequencies[i]] for i in idx]
        _, norms = _subsample(out.grad_norms, 2000)
        curves["grad_norms"] = [float(f"{v:.5g}") for v in norms]
    return {"measures": result, "curves": curves}


# ---------------------------------------------------------------------------------- aggregation

SUMMARY = (
    "g_mean",
    "avg_precision",
    "avg_precision_1w",
    "g_mean_1w",
    "roc_auc",
    "minority_recall",
    "minority_precision",
    "macro_f1",
    "recovery_mean",
    "not_recovered",
    "grad_cv",
    "max_median",
    "skipped_steps",
    "events_per_s",
)


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    latest: dict[tuple, dict] = {}  # a job run twice (resumed runs) counts once
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                key = (r["stream"], r["seed"], r["contender"], r["events"])
                latest[(*key, r.get("batch_size", 64))] = r
    return list(latest.values())


def aggregate(records: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """(stream, contender) -> {measure: (mean, std, n_seeds)} over seeds."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["stream"], r["contender"])].append(r["measures"])
    table = {}
    for key, runs in groups.items():
        row: dict[str, Any] = {}
        for m in SUMMARY:
            vals = [r[m] for r in runs if r.get(m) is not None and not _isnan(r[m])]
            if vals:
                row[m] = (float(np.mean(vals)), float(np.std(vals)), len(vals))
        row["seeds"] = len(runs)
        row["events"] = runs[0].get("events")
        k = len(runs[0]["per_class_recall"])
        row["per_class_recall"] = [
            _mean_or_none([r["per_class_recall"][c] for r in runs]) for c in range(k)
        ]
        table[key] = row
    return table


def _isnan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _mean_or_none(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


# ------------------------------------------------------------------------------------ Markdown

COLUMNS = (  # (measure, header, digits)
    ("g_mean", "G-mean", 3),
    ("avg_precision", "AP", 3),
    ("roc_auc", "ROC-AUC", 3),
    ("minority_recall", "min. recall", 3),
    ("minority_precision", "min. precision", 3),
    ("macro_f1", "macro-F1", 3),
    ("recovery_mean", "recovery (events)", 0),
    ("not_recovered", "not recovered", 1),
    ("grad_cv", "grad-norm CV", 2),
    ("max_median", "max/median", 1),
    ("skipped_steps", "skipped", 0),
    ("events_per_s", "events/s", 0),
)


def _cell(row: dict, measure: str, digits: int) -> str:
    if measure not in row:
        return "–"
    mean, std, _ = row[measure]
    if digits == 0:
        return f"{mean:,.0f}" if std == 0 else f"{mean:,.0f} ± {std:,.0f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def stream_table(table: dict, stream: str, contenders: list[str]) -> list[str]:
    rows = [c for c in contenders if (stream, c) in table]
    cols = [c for c in COLUMNS if any(c[0] in table[(stream, r)] for r in rows)]
    lines = [
        "| contender | seeds | " + " | ".join(h for _, h, _ in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    best = {
        m: max((table[(stream, r)][m][0] for r in rows if m in table[(stream, r)]), default=None)
        for m in ("g_mean", "avg_precision")
    }
    for r in rows:
        row = table[(stream, r)]
        cells = []
        for m, _, d in cols:
            text = _cell(row, m, d)
            if m in best and m in row and best[m] is not None and row[m][0] == best[m]:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| `{r}` | {row['seeds']} | " + " | ".join(cells) + " |")
    return lines


def per_class_table(
    table: dict, stream: str, classes: list[str], contenders: list[str]
) -> list[str]:
    rows = [c for c in contenders if (stream, c) in table]
    lines = [
        "| contender | " + " | ".join(f"recall {c}" for c in classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for r in rows:
        vals = table[(stream, r)]["per_class_recall"]
        lines.append(
            f"| `{r}` | " + " | ".join("–" if v is None else f"{v:.3f}" for v in vals) + " |"
        )
    return lines


def goal_check(table: dict, streams: list[str], default: str, baselines: list[str]) -> list[str]:
    """Per stream: does ``default`` beat each baseline on G-mean AND average precision?"""
    lines = [
        "| stream | beats on G-mean and AP | loses to "
        "| grad-norm CV vs `weighted`, same settings |",
        "|---|---|---|---|",
    ]
    twin = "weighted/" + default.split("/", 1)[1]  # same settings, class-weighted CE
    for s in streams:
        if (s, default) not in table:
            continue
        d = table[(s, default)]
        weighted = twin if (s, twin) in table else twin.split("?")[0]
        wins: list[str] = []
        losses: list[str] = []
        for b in baselines:
            if (s, b) not in table or b == default:
                continue
            o = table[(s, b)]
            ok = all(m in d and m in o and d[m][0] > o[m][0] for m in ("g_mean", "avg_precision"))
            (wins if ok else losses).append(b)
        cv = "–"
        if (s, weighted) in table and "grad_cv" in d and "grad_cv" in table[(s, weighted)]:
            ratio = d["grad_cv"][0] / table[(s, weighted)]["grad_cv"][0]
            cv = f"{d['grad_cv'][0]:.2f} vs {table[(s, weighted)]['grad_cv'][0]:.2f} (x{ratio:.2f})"
        lines.append(
            f"| {s} | {len(wins)}/{len(wins) + len(losses)} | "
            f"{', '.join(f'`{b}`' for b in losses) or '–'} | {cv} |"
        )
    return lines


# --------------------------------------------------------------------------------------- plots

#: Short names for long contender names in plot legends (filled in by bench.quality).
ALIASES: dict[str, str] = {}


def _mean_curves(records: list[dict], key: str) -> dict[tuple[str, str], tuple[list, np.ndarray]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        if key in r["curves"]:
            groups[(r["stream"], r["contender"])].append(r["curves"])
    out = {}
    for k, curves in groups.items():
        xs = curves[0][key + "_at"] if key + "_at" in curves[0] else curves[0]["gmean_at"]
        rows = [c[key] for c in curves if len(c[key]) == len(curves[0][key])]
        arr = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[k] = (xs, np.nanmean(arr, axis=0))
    return out


def plot_gmean(
    records: list[dict],
    streams: list[str],
    contenders: list[str],
    drifts: dict[str, list[int]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _mean_curves(records, "gmean")
    cols = 2
    rows = max(1, math.ceil(len(streams) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.2 * rows), squeeze=False)
    for ax, s in zip(axes.flat, streams, strict=False):
        for c in contenders:
            if (s, c) in curves:
                xs, ys = curves[(s, c)]
                ax.plot(xs, ys, label=ALIASES.get(c, c), lw=1.1)
        for t in drifts.get(s, []):
            ax.axvline(t, color="grey", ls="--", lw=0.8)
        ax.set_title(s, fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("rolling G-mean")
    for ax in list(axes.flat)[len(streams) :]:
        ax.axis("off")
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, h)
    if legend:
        fig.legend(
            list(legend.values()),
            list(legend),
            loc="lower center",
            ncol=min(4, len(legend)),
            fontsize=8,
        )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_factors(
    records: list[dict],
    streams: Sequence[str],
    contender: str,
    drifts: dict[str, list[int]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [
        r
        for r in records
        if r["contender"] == contender and r["stream"] in streams and "factors" in r["curves"]
    ]
    first: dict[str, dict] = {}
    for r in sorted(chosen, key=lambda r: r["seed"]):
        first.setdefault(r["stream"], r)
    shown = [s for s in streams if s in first]
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 2, figsize=(12, 2.6 * len(shown)), squeeze=False)
    for (ax_f, ax_p), s in zip(axes, shown, strict=True):
        c = first[s]["curves"]
        xs = c["factor_at"]
        f = np.array(c["factors"])
        p = np.array(c["frequencies"])
        for k in range(f.shape[1]):
            ax_f.plot(xs, f[:, k], label=f"class {k}")
            ax_p.plot(xs, p[:, k], label=f"class {k}")
        ax_f.set_yscale("log")
        ax_p.set_yscale("log")
        for ax in (ax_f, ax_p):
            for t in drifts.get(s, []):
                ax.axvline(t, color="grey", ls="--", lw=0.8)
        who = ALIASES.get(contender, contender)
        ax_f.set_title(f"{s}: factors w_c ({who}, seed {first[s]['seed']})", fontsize=9)
        ax_p.set_title(f"{s}: EMA class frequencies p_c", fontsize=9)
        ax_f.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_grad_norms(
    records: list[dict], streams: list[str], contenders: list[str], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        s for s in streams if any(r["stream"] == s and "grad_norms" in r["curves"] for r in records)
    ]
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 1, figsize=(12, 3.0 * len(shown)), squeeze=False)
    for ax, s in zip(axes[:, 0], shown, strict=True):
        data, names = [], []
        for c in contenders:
            norms = [
                v
                for r in records
                if r["stream"] == s and r["contender"] == c
                for v in r["curves"].get("grad_norms", [])
                if v > 0 and math.isfinite(v)
            ]
            if norms:
                data.append(norms)
                names.append(ALIASES.get(c, c))
        if not data:
            continue
        ax.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(names) + 1), names, rotation=25, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("per-step grad norm")
        ax.set_title(f"{s}: gradient-norm distribution per strategy (all seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summary_table(table: dict, streams: list[str], columns: list[tuple[str, str]]) -> list[str]:
    """One line per stream: G-mean / AP of the chosen contenders and of the best river one."""
    head = [label for _, label in columns] + ["best river (by AP)"]
    lines = ["| stream | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for s in streams:
        cells = []
        for name, _ in columns:
            row: Any = table.get((s, name))
            ok = row is not None and "g_mean" in row and "avg_precision" in row
            cells.append(f"{row['g_mean'][0]:.3f} / {row['avg_precision'][0]:.3f}" if ok else "–")
        river = [
            (row["avg_precision"][0], c, row)
            for (st, c), row in table.items()
            if st == s and c.startswith("river:") and "avg_precision" in row
        ]
        if river:
            _, c, row = max(river)
            cells.append(f"`{c}` {row['g_mean'][0]:.3f} / {row['avg_precision'][0]:.3f}")
        else:
            cells.append("–")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def rank_table(table: dict, streams: list[str], contenders: list[str]) -> list[str]:
    """Mean rank over streams (1 = best) on G-mean and on AP, best first."""
    ranks: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"g_mean": [], "ap": []})
    for s in streams:
        here = [c for c in contenders if (s, c) in table and "g_mean" in table[(s, c)]]
        for measure, key in (("g_mean", "g_mean"), ("avg_precision", "ap")):
            ordered = sorted(here, key=lambda c: -table[(s, c)].get(measure, (-1.0,))[0])
            for i, c in enumerate(ordered, 1):
                ranks[c][key].append(i)
    rows = sorted(
        (float(np.mean(r["g_mean"])), float(np.mean(r["ap"])), len(r["g_mean"]), c)
        for c, r in ranks.items()
    )
    lines = [
        "| contender | mean rank G-mean | mean rank AP | streams |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{c}` | {g:.1f} | {a:.1f} | {n} |" for g, a, n, c in rows]
    return lines
