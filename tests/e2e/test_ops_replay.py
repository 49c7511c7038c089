"""`streambalance replay` against a real service (uvicorn in a subprocess, loopback port):
CSV without ids gets stable ids, so a re-run adds nothing; `--predict-first` prints scores."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.cli import main
from tests.e2e.conftest import fraud_stream
from tests.e2e.test_crash import _free_port, _wait_ready


@pytest.fixture
def service_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "STREAMBALANCE_DATA_DIR": str(tmp_path / "data"),
        "STREAMBALANCE_BATCH_MAX_WAIT_MS": "5",
        "STREAMBALANCE_LOG_LEVEL": "warning",
        **getattr(request, "param", {}),
    }
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        if process.stderr:
            process.stderr.close()


def _write_csv_without_ids(path: Path, events: list[dict]) -> Path:
    columns = list(events[0]["features"])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, "label"])
        for event in events:
            writer.writerow([*(event["features"][c] for c in columns), event["label"]])
    return path


def test_replay_rerun_adds_nothing(
    service_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = fraud_stream(450, fraud_rate=0.05, seed=31)
    path = _write_csv_without_ids(tmp_path / "stream.csv", events)
    args = ["replay", str(path), "--url", service_url, "--batch-size", "100", "--wait", "--quiet"]

    assert main(args) == 0
    first = capsys.readouterr().out
    assert "sent 450 events in 5 batches" in first
    assert "450 accepted, 0 duplicates" in first
    state = httpx.get(service_url + "/state").json()
    assert state["events_learned"] == 450

    assert main(args) == 0
    second = capsys.readouterr().out
    assert "0 accepted, 450 duplicates" in second
    state = httpx.get(service_url + "/state").json()
    assert state["events_learned"] == 450
    frauds = sum(e["label"] == "fraud" for e in events)
    assert state["counts"] == {"legit": 450 - frauds, "fraud": frauds}


def test_replay_predict_first_prints_per_class_metrics(
    service_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = fraud_stream(600, fraud_rate=0.1, seed=32)
    for e in events:
        del e["id"]  # ids come from the file name and line number
    path = tmp_path / "stream.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    code = main(
        ["replay", str(path), "--url", service_url, "--batch-size", "50", "--predict-first",
         "--quiet"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "600 accepted, 0 duplicates" in out
    assert "prequential scores of 600 predictions" in out
    rows = {line.split()[1]: line.split() for line in out.splitlines() if "│ fraud" in line
            or "│ legit" in line}  # fmt: skip
    frauds = sum(e["label"] == "fraud" for e in events)
    assert rows["fraud"][3] == str(frauds)  # support column
    assert rows["legit"][3] == str(600 - frauds)
    recall_fraud = float(rows["fraud"][5])
    assert 0.5 < recall_fraud <= 1.0  # separable stream: most frauds caught before learning them
    assert "G-mean" in out


@pytest.mark.parametrize(
    "service_url",
    [{"STREAMBALANCE_RATE_LIMIT_PER_S": "100", "STREAMBALANCE_RATE_LIMIT_BURST": "150"}],
    indirect=True,
)
def test_replay_retries_with_backoff_when_rate_limited(
    service_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Burst 150, 100 events/s: the second batch of 100 gets a 429 with Retry-After and
    # goes through on a retry; nothing is lost or doubled.
    events = fraud_stream(300, fraud_rate=0.05, seed=33)
    path = _write_csv_without_ids(tmp_path / "limited.csv", events)
    args = ["replay", str(path), "--url", service_url, "--batch-size", "100", "--wait", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    retries = int(out.split(" duplicates, ")[1].split(" retries")[0])
    assert retries >= 1, out
    assert "sent 300 events in 3 batches" in out and "300 accepted, 0 duplicates" in out
    assert httpx.get(service_url + "/state").json()["events_learned"] == 300
