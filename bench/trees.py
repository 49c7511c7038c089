"""Run a measurement against a source tree: a fresh process with that tree first on
`PYTHONPATH`, so two trees (before and after a change) are compared on one machine, in
one run. The measurement is Python source that prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def check_tree(tree: Path) -> Path:
    """``tree`` resolved; ValueError unless it holds streambalance's models/."""
    tree = tree.resolve()
    if not (tree / "models" / "trainer.py").is_file():
        raise ValueError(f"{tree}: not a streambalance source tree (no models/trainer.py)")
    return tree


def run_in_tree(tree: Path, code: str, *args: str) -> dict[str, float]:
    """The JSON object that ``code`` prints, run by this interpreter in ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    res = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tree, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"{tree}: the measurement failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def tree_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--against TREE`` (another source tree to compare with)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--against", type=Path, help="another source tree to compare with")
    return parser


def trees_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Path]:
    """This tree, after ``--against``'s tree when given; a parser error for a bad tree."""
    try:
        return [check_tree(t) for t in ([args.against] if args.against else []) + [ROOT]]
    except ValueError as exc:
        parser.error(str(exc))
