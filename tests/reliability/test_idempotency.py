"""Issue 6 §5: the same event id twice, or retried concurrently over several connections, is
learned once; a late label for the same prediction id twice is learned once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from tests.reliability.conftest import Proc
from tests.reliability.helpers import make_events, state, wait_learned

CONNECTIONS = 8


def _race(url: str, body: dict, n: int = CONNECTIONS) -> list[httpx.Response]:
    """n threads, each with its own connection, post `body` at the same moment."""
    barrier = threading.Barrier(n)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            client.get("/healthz")  # connection open before the barrier
            barrier.wait()
            response = client.post("/learn", json=body)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return responses


@pytest.mark.slow
def test_duplicates_and_concurrent_retries_are_learned_once(
    service_factory: Callable[..., Proc],
) -> None:
    service = service_factory(None, name="idem")
    url = service.url
    events = make_events(250, seed=2, prefix="idem")
    with httpx.Client(base_url=url, timeout=30.0) as client:
        first = client.post("/learn", json=events[0]).json()
        again = client.post("/learn", json=events[0]).json()
        in_batch = client.post("/learn", json={"events": [events[1], events[1], events[2]]}).json()
    assert first == {"accepted": 1, "duplicates": 0}
    assert again == {"accepted": 0, "duplicates": 1}
    assert in_batch == {"accepted": 2, "duplicates": 1}

    batch = {"events": events[3:]}  # 247 events, retried by 8 connections at once
    responses = _race(url, batch)
    codes = sorted(r.status_code for r in responses)
    accepted = sum(r.json().get("accepted", 0) for r in responses)
    duplicates = sum(r.json().get("duplicates", 0) for r in responses)
    final = wait_learned(url, 250, timeout=60.0, settle=2.0)
    outcome = (
        f"{CONNECTIONS} concurrent copies of {len(batch['events'])} events: statuses {codes}, "
        f"accepted {accepted}, duplicates {duplicates}; "
        f"learned {final['events_learned']} of 250 unique"
    )
    print(outcome)
    assert codes == [202] * CONNECTIONS, outcome
    assert accepted == len(batch["events"]) and duplicates == (CONNECTIONS - 1) * len(
        batch["events"]
    ), outcome
    assert final["events_learned"] == 250, outcome


@pytest.mark.slow
def test_a_late_label_for_one_prediction_is_learned_once(
    service_factory: Callable[..., Proc],
) -> None:
    service = service_factory(None, name="late")
    url = service.url
    with httpx.Client(base_url=url, timeout=30.0) as client:
        served = client.get("/predict", params={"amount": 810.0, "mcc": "5732", "ip_risk": 0.9})
        assert served.status_code == 200, served.text
        pid = served.json()["prediction_id"]
        first = client.post("/learn?wait=true", json={"prediction_id": pid, "label": "fraud"})
        second = client.post("/learn", json={"prediction_id": pid, "label": "fraud"})
        other = client.get("/predict", params={"amount": 12.0, "mcc": "5411"}).json()[
            "prediction_id"
        ]
    assert first.status_code == 200 and first.json()["accepted"] == 1, first.text
    assert second.status_code == 422 and "prediction_id" in second.json()["detail"], second.text
    raced = _race(url, {"prediction_id": other, "label": "legit"})
    codes = sorted(r.status_code for r in raced)
    final = wait_learned(url, 2, timeout=30.0, settle=2.0)
    outcome = (
        f"same prediction id labeled twice: {first.status_code}, {second.status_code}; raced over "
        f"{CONNECTIONS} connections: {codes}; learned {final['events_learned']} (expected 2)"
    )
    print(outcome)
    assert codes == [202] + [422] * (CONNECTIONS - 1), outcome
    assert final["events_learned"] == 2 and final["counts"] == {"legit": 1, "fraud": 1}, outcome
    assert state(url)["events_learned"] == 2
