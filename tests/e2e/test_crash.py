"""A crash (kill -9 of `streambalance serve`) loses nothing: the next start replays the stream
entries applied after the last checkpoint, from the checkpoint's EMA state, exactly once."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.cli.event_files import iter_events
from service.settings import Settings
from tests.e2e.conftest import fraud_stream, running


def _write_csv(path: Path, events: list[dict]) -> Path:
    columns = list(events[0]["features"])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *columns, "label"])
        for event in events:
            writer.writerow([event["id"], *(event["features"][c] for c in columns), event["label"]])
    return path


def test_replay_reads_csv_and_jsonl(tmp_path: Path) -> None:
    events = fraud_stream(5, fraud_rate=0.5, seed=3)
    csv_file = _write_csv(tmp_path / "e.csv", events)
    with csv_file.open(newline="") as handle:
        rows = list(iter_events(csv_file, handle))
    assert [r["id"] for r in rows] == [e["id"] for e in events]
    assert [r["label"] for r in rows] == [e["label"] for e in events]
    assert rows[0]["features"]["amount"] == events[0]["features"]["amount"]
    assert rows[0]["features"]["mcc"] == int(events[0]["features"]["mcc"])  # numbers parse
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_text("\n".join(json.dumps(e) for e in events) + "\n\n")
    with jsonl.open() as handle:
        assert list(iter_events(jsonl, handle)) == events


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"service exited early: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("service did not become ready")


@pytest.mark.slow
async def test_kill_9_then_restart_learns_every_event_once(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    env = {
        **os.environ,
        "STREAMBALANCE_DATA_DIR": str(data_dir),
        "STREAMBALANCE_CHECKPOINT_EVERY_STEPS": "5",
        "STREAMBALANCE_CHECKPOINT_EVERY_SECONDS": "3600",
        "STREAMBALANCE_BATCH_MAX_WAIT_MS": "5",
        "STREAMBALANCE_LOG_LEVEL": "warning",
        "STREAMBALANCE_LEASE_TTL_S": "2",
        "STREAMBALANCE_BATCH_MAX_SIZE": "100",
    }
    env.pop("REDIS_URL", None)
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    events = fraud_stream(1300, fraud_rate=0.05, seed=21)
    try:
        _wait_ready(url, process)
        with httpx.Client(base_url=url, timeout=30.0) as client:
            for start in range(0, len(events), 100):  # 13 steps: 10 checkpointed, 3 not
                response = client.post(
                    "/learn?wait=true", json={"events": events[start : start + 100]}
                )
                assert response.status_code == 200, response.text
            before = client.get("/state").json()
            # Checkpoints run in the background: the second may still be in flight.
            deadline = time.monotonic() + 10
            while before["checkpoint_version"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
                before = client.get("/state").json()
        assert before["events_learned"] == len(events)
        assert before["checkpoint_version"] == 2  # after steps 5 and 10
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()
    # The embedded server got SIGTERM through the parent-death signal and saved its AOF.
    time.sleep(1.0)

    frauds = sum(e["label"] == "fraud" for e in events)
    async with running(make_settings(data_dir=data_dir, lease_ttl_s=2)) as (_, client):
        # The dead process's lease expires (2 s), then this one leads, restores and replays.
        deadline = time.monotonic() + 30
        while True:
            state = (await client.get("/state")).json()
            if state["events_learned"] == len(events) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert state["events_learned"] == len(events)
        assert state["counts"] == {"legit": len(events) - frauds, "fraud": frauds}
        assert state["stream_lag"] == 0
        # Replayed from the checkpoint's EMA: the same estimates as before the crash.
        assert state["class_frequencies"] == before["class_frequencies"]
        # Replay groups the 3 unacknowledged entries into micro-batches its own way.
        assert state["model_version"] > 10
