"""bench.throughput's table: ratios are medians of per-round ratios, and each target row is
judged against its threshold (the run itself is `python -m bench.throughput`)."""

from __future__ import annotations

from bench.loadgen import LoadResult
from bench.throughput import Results, build_rows


def _load(rps: float, p99_ms: float) -> LoadResult:
    return LoadResult("python", 16, 1.0, int(rps), 0, p99_ms / 2, p99_ms)


def _results(ours_rps: list[float], ref_rps: list[float]) -> Results:
    res = Results()
    for key in ("learn_batch500", "learn_single", "predict_get", "predict_get_c1",
                "predict_post100_c1"):  # fmt: skip
        res.loads[key] = {
            "ours": [_load(o, 4.0) for o in ours_rps],
            "reference": [_load(r, 2.0) for r in ref_rps],
        }
    res.learned_eps["learn_batch500"] = [150_000.0, 10_000.0, 140_000.0]
    res.river = [70_000.0, 60_000.0, 65_000.0]
    res.freshness_ms = [10.0] * 98 + [60.0, 70.0]
    res.startup_s = [1.5, 2.5, 4.0]
    res.trainer_service, res.service_batch = [30_000.0], 64
    return res


def test_ratios_are_medians_of_per_round_ratios_and_targets_are_judged() -> None:
    # per-round req/s ratios 0.9, 0.5, 0.85 -> median 0.85 (>= 0.8); the ratio of the
    # medians would be 900/1000 = 0.9: the table must use per-round ratios
    rows = {r.scenario: r for r in build_rows(_results([900.0, 500.0, 850.0], [1000.0] * 3))}
    single = rows["Single-event POST /learn, 16 conn: req/s"]
    assert single.ratio == 0.85 and single.met is True
    p99 = rows["Single-event POST /learn, 16 conn: p99"]
    assert p99.ratio == 2.0 and p99.met is False  # 4 ms vs 2 ms > 1.5x
    batched = next(r for k, r in rows.items() if k.startswith("Batched learning"))
    assert batched.ratio == 140_000.0 / 65_000.0 and batched.met is True  # 2.15x >= 2x
    fresh = next(r for k, r in rows.items() if k.startswith("Freshness"))
    assert fresh.met is False  # nearest-rank p99 of the samples is 60 ms > 50 ms
    start = next(r for k, r in rows.items() if k.startswith("Start-up"))
    assert start.ours == "2.50 s" and start.met is True
    service = next(r for k, r in rows.items() if "micro-batch size (64 events" in k)
    assert service.ratio == 30_000.0 / 65_000.0 and service.met is None
    cells = single.cells()
    assert cells[3] == "0.85x" and cells[5] == "yes" and p99.cells()[5] == "**no**"
