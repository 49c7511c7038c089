"""bench.quality --realistic's parts that need no long run: the credit-card reader, the
availability note, and the goal check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import realistic
from bench.streams import load_stream

HEADER = '"Time",' + ",".join(f'"V{i}"' for i in range(1, 29)) + ',"Amount","Class"\n'


def write_creditcard(path: Path, rows: list[tuple[float, float, int]]) -> Path:
    lines = [HEADER]
    for t, amount, label in rows:
        lines.append(f"{t}," + ",".join(["0.5"] * 28) + f',{amount},"{label}"\n')
    path.write_text("".join(lines))
    return path


def test_the_credit_card_file_streams_in_time_order(tmp_path, monkeypatch) -> None:
    csv = write_creditcard(tmp_path / "cc.csv", [(0.0, 9.5, 0), (2.0, 1.0, 1), (1.0, 3.0, 0)])
    monkeypatch.setenv("STREAMBALANCE_CREDITCARD_CSV", str(csv))
    s = load_stream("creditcard", seed=0, n=10**9, cache_dir=tmp_path)
    assert s.n == 3 and s.labels.tolist() == [0, 0, 1]
    assert [e["Amount"] for e in s.features] == [9.5, 3.0, 1.0]
    assert len(s.features[0]) == 29 and "Time" not in s.features[0]
    assert s.timestamps is not None and np.all(np.diff(s.timestamps) >= 0)
    ok, notes = realistic.streams()
    assert "creditcard" in ok and not notes


def test_a_missing_credit_card_file_is_a_note_not_a_failure(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMBALANCE_CREDITCARD_CSV", str(tmp_path / "absent.csv"))
    ok, notes = realistic.streams()
    assert ok == ["card-handbook", "card-theft"]
    assert len(notes) == 1 and "not on this machine" in notes[0] and "--creditcard" in notes[0]
    with pytest.raises(RuntimeError, match="not on this machine"):
        load_stream("creditcard", seed=0, n=10, cache_dir=tmp_path)


def record(stream: str, contender: str, ap: float, g: float) -> dict:
    return {"stream": stream, "seed": 0, "contender": contender,
            "measures": {"avg_precision": ap, "g_mean": g}}  # fmt: skip


def test_goal_table_marks_each_clause_and_the_verdict() -> None:
    default = "logit_adjusted/mlp"
    records = [
        record("a", default, 0.60, 0.86),
        record("a", "none/mlp", 0.55, 0.84),
        record("a", "river:lr", 0.58, 0.70),
        record("a", "river:lr+ros", 0.50, 0.84),
        record("a", "river:lr+rus", 0.40, 0.845),
        record("b", default, 0.50, 0.84),  # G-mean under 0.85
        record("b", "none/mlp", 0.45, 0.83),
        record("b", "river:lr", 0.52, 0.60),  # and river LR ranks better
        record("b", "river:lr+ros", 0.40, 0.80),
    ]
    lines, met = realistic.goal_table(records, default)
    assert not met
    row_a, row_b = lines[2], lines[3]
    assert row_a.endswith("| yes | yes | yes | yes |"), row_a
    assert row_b.endswith("| yes | **no** | **no** | yes |"), row_b
    lines, met = realistic.goal_table(records[:5], default)
    assert met
