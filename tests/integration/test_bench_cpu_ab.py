"""bench.cpu_ab end to end on this tree: a real service, a real load, a CPU figure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import cpu_ab

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cpu_per_request_of_this_tree(capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(ROOT), "--load", "predict_get", "--rounds", "1", "--duration", "1"]
    assert cpu_ab.main(args) == 0
    out = capsys.readouterr().out
    row = re.search(r"^\| predict_get \| (\d+) µs \|$", out, re.M)
    assert row, out
    assert 20 <= int(row.group(1)) <= 100_000, out  # some CPU per request, not nothing


def test_a_directory_that_is_not_a_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cpu_ab.main([str(tmp_path)])
