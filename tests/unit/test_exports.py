"""`models.__all__` is exactly the public API: every submodule's `__all__`, re-exported."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import models

SUBMODULES = sorted(
    info.name for info in pkgutil.iter_modules(models.__path__) if not info.name.startswith("_")
)


def test_models_all_is_the_union_of_submodule_all() -> None:
    expected = set()
    for name in SUBMODULES:
        expected |= set(importlib.import_module(f"models.{name}").__all__)
    assert sorted(models.__all__) == sorted(expected)
    assert len(models.__all__) == len(set(models.__all__))  # no name exported twice


def test_every_exported_name_is_the_submodule_object() -> None:
    for name in SUBMODULES:
        module = importlib.import_module(f"models.{name}")
        for public in module.__all__:
            assert getattr(models, public) is getattr(module, public), (name, public)


def test_no_public_name_outside_all() -> None:
    public = {
        n
        for n, v in vars(models).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert public == set(models.__all__)


def test_each_submodule_all_lists_its_public_definitions() -> None:
    for name in SUBMODULES:
        module = importlib.import_module(f"models.{name}")
        defined = {
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v))
            and v.__module__ == module.__name__
        }
        assert defined <= set(module.__all__), (name, sorted(defined - set(module.__all__)))
        assert all(hasattr(module, n) for n in module.__all__), name


def test_the_contract_names_are_exported() -> None:
    for name in (
        "HashingFeaturizer", "FeatureError", "OnlineLearner", "StepStats",
        "ClassFrequencyEstimator", "FactorSmoother", "build_strategy", "STRATEGIES",
        "DecisionRule", "prior_correct", "PrequentialMetrics", "DriftMonitor",
        "StreamTrainer", "TrainerConfig", "BatchReport", "FORMAT_VERSION",
    ):  # fmt: skip
        assert name in models.__all__, name
