"""bench.learner_step and bench.cardinality: the per-tree runs and their tables (the runs
themselves are `python -m bench.learner_step` and `python -m bench.cardinality`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cardinality, learner_step
from bench.trees import ROOT, check_tree, run_in_tree


def test_learner_step_table_takes_medians_and_per_round_ratios() -> None:
    before, after = Path("/t/before"), Path("/t/after")
    rows = {key: 1.0 for key, _, _ in learner_step.ROWS}
    runs = {
        before: [{**rows, "river": 100.0, "64/1t": 50.0}, {**rows, "river": 200.0, "64/1t": 60.0}],
        after: [{**rows, "river": 100.0, "64/1t": 150.0}, {**rows, "river": 100.0, "64/1t": 90.0}],
    }
    table = learner_step.render(runs, load=1.0)
    line = next(row for row in table.splitlines() if row.startswith("| 64-event"))
    # medians 55 and 120 events/s; ratios to river: median(0.5, 0.3) and median(1.5, 0.9);
    # after/before per round: 3.0 and 1.5, median 2.25
    assert line.split(" | ")[1:] == ["55 (0.40x)", "120 (1.20x)", "2.25x |"]


def test_cardinality_probe_runs_in_a_tree_and_reports_every_figure() -> None:
    result = run_in_tree(ROOT, cardinality._CHILD, "500")
    assert set(result) == {key for key, _, _ in cardinality.FIELDS}
    assert result["snapshot_bytes"] > result["normal_snapshot_bytes"] > 0
    table = cardinality.render({ROOT: result}, 500, load=0.5)
    assert "| snapshot after the distinct names (bytes) |" in table


def test_a_directory_that_is_not_a_source_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a streambalance source tree"):
        check_tree(tmp_path)
