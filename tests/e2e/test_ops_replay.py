"""`streambalance replay` against a real service (uvicorn in a subprocess, loopback port):
CSV without ids gets ids from the file's content, so a re-run adds nothing (exit code 3) and
another file of the same name is learned; the key comes from the environment;
`--predict-first` prints scores."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.cli import main
from tests.e2e.conftest import fraud_stream
from tests.e2e.test_crash import _free_port, _wait_ready


def wait_learned(url: str, expected: int, timeout: float = 30.0) -> int:
    """events_learned once it reaches `expected` (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    learned = -1
    while time.monotonic() < deadline:
        learned = httpx.get(url + "/state").json()["events_learned"]
        if learned >= expected:
            break
        time.sleep(0.1)
    return int(learned)


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

    assert main(args) == 3  # nothing new: every event was already stored
    second = capsys.readouterr()
    assert "0 accepted, 450 duplicates" in second.out
    assert "WARNING: 450 of 450 events were already stored" in second.err
    state = httpx.get(service_url + "/state").json()
    assert state["events_learned"] == 450
    frauds = sum(e["label"] == "fraud" for e in events)
    assert state["counts"] == {"legit": 450 - frauds, "fraud": frauds}


def test_replay_predict_first_prints_per_class_metrics(
    service_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = fraud_stream(600, fraud_rate=0.1, seed=32)
    for e in events:
        del e["id"]  # ids come from the file's content, the line and the event
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


def _write_jsonl(path: Path, events: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "id"}) + "\n"
                            for e in events))  # fmt: skip
    return path


def test_files_of_the_same_name_in_two_folders_are_both_learned(
    service_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Audit finding 4: ids were `<file name>:<line>`, so feb/events.jsonl was dropped whole as
    # duplicates of jan/events.jsonl.
    jan = _write_jsonl(tmp_path / "jan" / "events.jsonl", fraud_stream(40, 0.1, seed=34))
    feb = _write_jsonl(tmp_path / "feb" / "events.jsonl", fraud_stream(60, 0.1, seed=35))
    for path, n in ((jan, 40), (feb, 60)):
        code = main(["replay", str(path), "--url", service_url, "--wait", "--quiet"])
        out = capsys.readouterr().out
        assert code == 0 and f"{n} accepted, 0 duplicates" in out, out
    assert httpx.get(service_url + "/state").json()["events_learned"] == 100


def test_identical_lines_are_two_events_and_a_mostly_duplicate_replay_warns(
    service_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = fraud_stream(30, 0.1, seed=36)
    path = _write_jsonl(tmp_path / "twice.jsonl", events + events[:10])  # 10 lines repeated
    assert main(["replay", str(path), "--url", service_url, "--wait", "--quiet"]) == 0
    assert "40 accepted, 0 duplicates" in capsys.readouterr().out

    grown = _write_jsonl(tmp_path / "grown.jsonl", events + events[:10])
    with grown.open("a") as handle:  # another file: its content differs, so do its ids
        handle.write(json.dumps({"features": {"amount": 1.0}, "label": "legit"}) + "\n")
    assert main(["replay", str(grown), "--url", service_url, "--wait", "--quiet"]) == 0
    assert "41 accepted, 0 duplicates" in capsys.readouterr().out

    def replay_with_ids(n: int) -> tuple[int, str, str]:
        path = tmp_path / f"with-{n}-ids.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events[:n]))
        code = main(["replay", str(path), "--url", service_url, "--quiet"])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = replay_with_ids(4)
    assert code == 0 and "4 accepted, 0 duplicates" in out and "WARNING" not in err
    code, out, err = replay_with_ids(5)  # 4 of 5 ids seen before: added one, warns
    assert code == 0 and "1 accepted, 4 duplicates" in out
    assert "WARNING: 4 of 5 events were already stored" in err
    code, out, err = replay_with_ids(5)  # nothing new at all: exit code 3
    assert code == 3 and "0 accepted, 5 duplicates" in out and "WARNING: 5 of 5" in err
    assert wait_learned(service_url, 86) == 86


@pytest.mark.parametrize(
    "service_url", [{"STREAMBALANCE_API_KEY": "replay-key-0123456"}], indirect=True
)
def test_the_api_key_comes_from_the_environment_not_the_command_line(
    service_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _write_jsonl(tmp_path / "keyed.jsonl", fraud_stream(20, 0.1, seed=37))
    args = ["replay", str(path), "--url", service_url, "--quiet"]
    monkeypatch.delenv("STREAMBALANCE_API_KEY", raising=False)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "HTTP 401: X-API-Key: header missing" in err and "0 events sent before it" in err

    monkeypatch.setenv("STREAMBALANCE_API_KEY", "replay-key-0123456")
    assert main(args) == 0
    assert "20 accepted" in capsys.readouterr().out

    monkeypatch.delenv("STREAMBALANCE_API_KEY")
    assert main([*args, "--api-key", "replay-key-0123456"]) == 3  # still works, deprecated
    err = capsys.readouterr().err
    assert "--api-key is deprecated" in err and "STREAMBALANCE_API_KEY" in err


def test_a_bad_line_or_argument_is_a_message_and_an_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"features": {"a": 1}, "label": 0}\nnot json\n')
    unreachable = "http://127.0.0.1:9"  # never contacted: the file fails first
    assert main(["replay", str(path), "--url", unreachable, "--quiet"]) == 1
    assert f"{path}:2: not a JSON object" in capsys.readouterr().err
    assert main(["replay", str(path), "--url", unreachable, "--batch-size", "0"]) == 2
    assert "batch_size must be >= 1, got 0" in capsys.readouterr().err
