"""The status page at `/` in a real browser (Debian's headless Chromium): the charts draw the
live history (a line per class with points), the header shows /state's model version, and the
screenshot is not blank."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import fraud_stream
from tests.e2e.test_crash import _free_port, _wait_ready

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is not installed (apt-get install chromium; see .ci/run)"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--window-size=1200,900", "--virtual-time-budget=5000", *extra, url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


class _Charts(HTMLParser):
    """Polylines per chart (svg id -> {series: point count}) and texts by element id."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, int]] = {}
        self.texts: dict[str, str] = {}
        self.attrs: dict[str, dict[str, str | None]] = {}  # by element id
        self.signals: list[str] = []
        self.models: list[str] = []
        self._svg: str | None = None
        self._text_id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self._svg = a.get("id")
            self.charts.setdefault(self._svg or "", {})
        elif tag == "polyline" and self._svg:
            points = (a.get("points") or "").split()
            assert int(a.get("data-count") or -1) == len(points)
            self.charts[self._svg][a.get("data-series") or ""] = len(points)
        elif tag == "tr" and a.get("data-signal"):
            self.signals.append(a["data-signal"] or "")
        elif tag == "tr" and a.get("data-model"):
            self.models.append(a["data-model"] or "")
        if a.get("id"):
            self._text_id = a["id"]
            self.attrs[a["id"] or ""] = a

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None

    def handle_data(self, data: str) -> None:
        if self._text_id and data.strip():
            self.texts.setdefault(self._text_id, data.strip())
        self._text_id = None


@contextmanager
def _serve(tmp_path: Path, **settings: str) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "STREAMBALANCE_DATA_DIR": str(tmp_path / "data"),
        "STREAMBALANCE_BATCH_MAX_WAIT_MS": "5",
        "STREAMBALANCE_LOG_LEVEL": "warning",
        "STREAMBALANCE_HISTORY_INTERVAL_S": "0.05",
        # a champion and two challengers, whatever the default strategy is
        "STREAMBALANCE_STRATEGY": "rescaled",
        "STREAMBALANCE_SHADOWS": "weighted,logit_adjusted",
        "STREAMBALANCE_CHECKPOINT_EVERY_STEPS": "4",
        **{f"STREAMBALANCE_{name.upper()}": value for name, value in settings.items()},
    }
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        if process.stderr:
            process.stderr.close()


@pytest.fixture
def live_url(tmp_path: Path) -> Iterator[str]:
    with _serve(tmp_path) as url:
        yield url


KEY = "status-page-key-7f3a9c"


@pytest.mark.slow
def test_status_page_asks_for_the_key_when_reads_need_it(tmp_path: Path) -> None:
    """Issue 18 / audit 13: with AUTH_READ_ROUTES on, the page shows a key form instead of
    failing, and with the key (here from the URL fragment, which never reaches the server)
    it sends X-API-Key and draws the model."""
    with _serve(tmp_path, api_key=KEY, auth_read_routes="true") as url:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            events = fraud_stream(200, fraud_rate=0.05, seed=3)
            learned = client.post(
                "/learn?wait=true", json={"events": events}, headers={"X-API-Key": KEY}
            )
            assert learned.status_code == 200, learned.text
            assert client.get("/state").status_code == 401
            state = client.get("/state", headers={"X-API-Key": KEY}).json()
        keyless = _chromium(url + "/", tmp_path / "profile-a", "--dump-dom")
        keyed = _chromium(url + "/#key=" + KEY, tmp_path / "profile-b", "--dump-dom")
    assert keyless.returncode == 0 and keyed.returncode == 0, keyless.stderr[-2000:]
    without, with_key = _Charts(), _Charts()
    without.feed(keyless.stdout)
    with_key.feed(keyed.stdout)
    assert "hidden" not in without.attrs["key-form"], without.attrs.get("key-form")
    assert "API key" in without.texts.get("error", ""), without.texts
    assert without.texts.get("model-version") == "-"
    assert "hidden" in with_key.attrs["key-form"], with_key.attrs.get("key-form")
    assert with_key.texts.get("model-version") == str(state["model_version"])
    assert KEY not in keyed.stdout  # the fragment is gone from the page's URL and DOM


@pytest.mark.slow
def test_status_page_draws_live_history_in_chromium(live_url: str, tmp_path: Path) -> None:
    events = fraud_stream(1200, fraud_rate=0.05, seed=41)
    with httpx.Client(base_url=live_url, timeout=30.0) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert not re.search(r"""(src|href)=["']?https?:""", page.text)  # no external assets
        for start in range(0, len(events), 100):
            batch = events[start : start + 100]
            if start < 600:
                response = client.post("/learn?wait=true", json={"events": batch})
            else:  # served first, labelled later: production performance
                served = client.post(
                    "/predict", json={"events": [{"features": e["features"]} for e in batch]}
                ).json()["predictions"]
                late = [{"prediction_id": p["prediction_id"], "label": e["label"]}
                        for p, e in zip(served, batch, strict=True)]  # fmt: skip
                response = client.post("/learn?wait=true", json={"events": late})
            assert response.status_code == 200, response.text
            time.sleep(0.12)  # let the sampler take a point per batch
        history = client.get("/state/history").json()["samples"]
        state = client.get("/state").json()
        drift = client.get("/drift").json()
        models = client.get("/models").json()
    assert len(history) >= 6

    result = _chromium(live_url + "/", tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = _Charts()
    parsed.feed(result.stdout)
    assert parsed.texts.get("model-version") == str(state["model_version"])
    assert parsed.texts.get("events-learned") == str(state["events_learned"])
    assert parsed.texts.get("strategy") == state["strategy"]
    assert parsed.texts.get("production-g-mean") == f"{state['production']['g_mean']:.3f}"
    assert parsed.models[:3] == ["rescaled", "weighted", "logit_adjusted"]
    # the learner may archive a version between the two reads; the page never shows more
    # than KEEP_VERSIONS (5) and never an older newest version than /models listed
    kept = [int(re.match(r"v(\d+) \(rescaled\)$", row)[1]) for row in parsed.models[3:]]
    assert 1 <= len(kept) <= 5, parsed.models
    assert kept == sorted(kept, reverse=True) and kept[0] >= models["versions"][0]["version"]
    for chart in ("chart-frequencies", "chart-factors", "chart-recall", "chart-precision"):
        series = parsed.charts[chart]
        assert set(series) == {"legit", "fraud"}, (chart, series)
        assert all(n >= 6 for n in series.values()), (chart, series)
    assert parsed.charts["chart-detections"].get("detections", 0) >= 6
    assert parsed.charts["chart-gmean"]["production"] >= 3  # late labels from batch 7 on
    # The drift table lists every signal /drift reports.
    assert sorted(parsed.signals) == sorted(s["name"] for s in drift["signals"])

    shot = tmp_path / "status.png"
    result = _chromium(live_url + "/", tmp_path / "profile2", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 900)
    colors = image.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, grid and lines, not a blank page
    # The class lines' colours (blue: legit, red: fraud) are drawn.
    pixels = {c for _, c in colors}
    assert (0x25, 0x63, 0xEB) in pixels and (0xDC, 0x26, 0x26) in pixels
