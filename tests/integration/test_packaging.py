"""The wheel users install: built from this tree with the project's build backend, its
contents checked (the service and the ML core with their Lua scripts and status page, no
top-level `bench`, the LICENSE in the metadata), then installed apart from the checkout and
run (`streambalance --version`, the package data read from the installed copy)."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
_CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", "data")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of what a source distribution holds: the build writes build/ and *.egg-info
    # next to pyproject.toml, which must not land in the checkout.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("models", "service", "bench", "tests"):  # bench and tests: must stay out
        shutil.copytree(ROOT / package, source / package, ignore=_CACHES)
    # No build isolation: the backend (setuptools, in the dev extra) is already installed, so
    # the build needs no network. `-q` keeps pip's progress out of the test log.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("streambalance-*.whl")
    return built


def _metadata(names: list[str], archive: zipfile.ZipFile) -> email.message.Message:
    (path,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(archive.read(path).decode())


@pytest.mark.slow
def test_wheel_holds_the_service_and_core_only_with_data_and_license(wheel: Path) -> None:
    assert wheel.name == f"streambalance-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top = {n.split("/")[0] for n in names}
        assert top == {"models", "service", f"streambalance-{VERSION}.dist-info"}, top
        assert not any(n.startswith(("bench/", "tests/")) for n in names)
        lua = {p.name for p in (ROOT / "service/storage/lua").glob("*.lua")}
        assert lua and {f"service/storage/lua/{n}" for n in lua} <= set(names)
        assert "service/http/static/status.html" in names
        assert {"service/py.typed", "models/py.typed"} <= set(names)
        license_path = f"streambalance-{VERSION}.dist-info/licenses/LICENSE"
        assert archive.read(license_path) == (ROOT / "LICENSE").read_bytes()
        meta = _metadata(names, archive)
        entry_points = archive.read(f"streambalance-{VERSION}.dist-info/entry_points.txt")
    assert (
        "Apache License" in (ROOT / "LICENSE").read_text()
        and "Version 2.0" in (ROOT / "LICENSE").read_text()
    )
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert "torch==2.13.0" in meta.get_all("Requires-Dist")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    classifiers = meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers
    assert b"streambalance = service.cli:main" in entry_points


@pytest.mark.slow
def test_the_installed_wheel_runs_apart_from_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert not (target / "bench").exists()
    # The dependencies come from this environment; `service` and `models` from the wheel
    # (PYTHONPATH precedes the editable install of the checkout), run outside the checkout.
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = (
        "import service, models, importlib.resources as r;"
        "print(service.__file__);"
        "print(len(r.files('service.storage').joinpath('lua', 'append.lua').read_text()));"
        "print(len(r.files('service.http').joinpath('static', 'status.html').read_text()));"
        "from service.client import Client; print(Client)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True, capture_output=True,
        text=True, timeout=120,
    ).stdout.splitlines()  # fmt: skip
    assert out[0].startswith(str(target)), out
    assert int(out[1]) == len((ROOT / "service/storage/lua/append.lua").read_text()), out
    assert int(out[2]) == len((ROOT / "service/http/static/status.html").read_text()), out
    version = subprocess.run(
        [sys.executable, "-m", "service.cli", "--version"], cwd=tmp_path, env=env, check=True,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert version.stdout.strip() == f"streambalance {VERSION}"
    unused = subprocess.run(
        [sys.executable, "-c", "import bench"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert unused.returncode != 0 and "No module named 'bench'" in unused.stderr
