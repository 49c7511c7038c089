"""The online learner step: featurizer + network + optimizer + loss strategy.

``learn`` runs one guarded SGD/Adam step on a micro-batch:

1. validate labels and class vectors, featurize (numeric stats updated: this is learning);
2. per-event loss ``l_i`` from the strategy, each capped at ``max_event_loss`` through a
   detached scale ``min(1, cap / l_i)``: the capped event still moves the model in the same
   direction, but never with more force than an event of loss ``cap``;
3. weights and reduction from the strategy (``class_gradient``: per-class gradients, combined
   and clipped here);
4. a non-finite loss or gradient skips the step: parameters and optimizer state stay as they
   were, ``skipped_steps`` counts it;
5. optional global norm clipping (``clip_norm``), then the optimizer step.

Nothing the caller passes in is modified.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models import analytic, kernels
from models.features import VECTOR_MIN_EVENTS, FeatureBatch, HashingFeaturizer
from models.networks import NETWORKS, LogisticRegression, build_network
from models.strategies import (
    BatchNormalized,
    LogitAdjusted,
    StepContext,
    Strategy,
    build_strategy,
)

# Feature dicts, or their encoding when the caller has it already (a labeled batch's pair
# from ``HashingFeaturizer.transform_pair``, read once for both uses).
Events = Sequence[Mapping[str, object]] | FeatureBatch

__all__ = ["OPTIMIZERS", "OnlineLearner", "PlainSGD", "SparseDenseAdam", "StepStats", "cap_scale"]

OPTIMIZERS = ("sgd", "adam")


@dataclass
class StepStats:
    """What one ``learn`` call did.

    ``loss`` is the reduced (capped, weighted) loss; ``per_class_loss`` the mean raw loss of
    each class's events in the batch (0.0 for absent classes); ``per_class_grad_norm`` the
    norm of the loss gradient on the logits of each class's events (after weights and
    per-class clipping, before global clipping): how hard each class pulled this step.
    ``grad_norm`` is the parameter gradient norm before global clipping.
    """

    loss: float
    per_class_loss: list[float]
    per_class_grad_norm: list[float]
    grad_norm: float
    clipped: bool
    skipped: bool
    batch_size: int


def cap_scale(losses: torch.Tensor, max_event_loss: float | None) -> torch.Tensor:
    """Detached per-event scale min(1, cap / l_i); multiply the loss by it to cap the pull.

    >>> cap_scale(torch.tensor([0.5, 20.0, 10.0]), 10.0).tolist()
    [1.0, 0.5, 1.0]
    """
    d = losses.detach()
    if max_event_loss is None:
        return torch.ones_like(d)
    return torch.where(d > max_event_loss, max_event_loss / d, torch.ones_like(d))


class OnlineLearner:
    """Owns featurizer, network, optimizer and strategy; learns from labeled micro-batches.

    Counters: ``steps`` (applied updates), ``skipped_steps`` (non-finite, not applied),
    ``clipped_steps`` (applied with some clipping), ``events_seen`` (labeled events passed to
    ``learn``, skipped steps included).
    """

    def __init__(
        self,
        n_classes: int,
        network: str = "logreg",
        hidden: Sequence[int] = (64,),
        n_bits: int = 18,
        optimizer: str = "sgd",
        lr: float = 0.05,
        strategy: str = "rescaled",
        strategy_params: Mapping[str, object] | None = None,
        max_event_loss: float | None = 10.0,
        clip_norm: float | None = None,
        seed: int = 0,
        max_features: int = 1000,
        numeric_bins: int = 0,
    ) -> None:
        if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; expected one of {NETWORKS}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
        if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if max_event_loss is not None and not (
            math.isfinite(max_event_loss) and max_event_loss > 0
        ):
            raise ValueError(
                f"max_event_loss must be a finite number > 0 or None, got {max_event_loss!r}"
            )
        if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"clip_norm must be a finite number > 0 or None, got {clip_norm!r}")
        self.n_classes = n_classes
        self.network_kind = network
        self.hidden = tuple(hidden)
        self.n_bits = n_bits
        self.optimizer_kind = optimizer
        self.lr = float(lr)
        self.strategy_name = strategy
        self.strategy_params = dict(strategy_params or {})
        self.max_event_loss = max_event_loss
        self.clip_norm = clip_norm
        self.seed = seed
        self.max_features = max_features
        self.numeric_bins = numeric_bins

        self.strategy: Strategy = build_strategy(strategy, **self.strategy_params)
        self.featurizer = HashingFeaturizer(
            n_bits=n_bits, max_features=max_features, numeric_bins=numeric_bins
        )
        init_gen = torch.Generator().manual_seed(seed)
        self.network = build_network(
            network, self.featurizer.n_inputs, n_classes, self.hidden, generator=init_gen
        )
        if optimizer == "sgd":
            self.optimizer: PlainSGD | SparseDenseAdam = PlainSGD(
                self.network.parameters(), lr=self.lr
            )
        else:
            self.optimizer = SparseDenseAdam(self.network, lr=self.lr)
        # Strategy randomness (oob's Poisson draws); part of the snapshot so runs replay.
        self.generator = torch.Generator().manual_seed(seed + 1)
        # Views of the parameters for the prediction kernels: they follow every in-place
        # update (the optimizers' and load_state_dict's copy_), so they are made once.
        self._weights = kernels.export_weights(self.network)
        self._params = [p for p in self.network.parameters() if p.requires_grad]
        # Gradients in closed form where they equal autograd's: a logistic regression with
        # a strategy whose loss is a weighted cross-entropy (models.analytic).
        cls = type(self.strategy)
        self._analytic = (
            isinstance(self.network, LogisticRegression)
            and not self.strategy.requires_per_class_grads
            and cls.event_loss in (Strategy.event_loss, LogitAdjusted.event_loss)
            and cls.reduce in (Strategy.reduce, BatchNormalized.reduce)
        )
        self._reset()

    def _reset(self) -> None:
        self.steps = 0
        self.skipped_steps = 0
        self.clipped_steps = 0
        self.events_seen = 0
        self._class_counts = torch.zeros(self.n_classes, dtype=torch.float64)
        self._calibration_cache: tuple[tuple, list[float]] | None = None

    @property
    def class_counts(self) -> list[float]:
        """Labeled events seen per class (the ``weighted`` strategy's default counts)."""
        return self._class_counts.tolist()

    def _encoded(self, features: Events, update: bool) -> FeatureBatch:
        if isinstance(features, FeatureBatch):
            return features
        return self.featurizer.transform(features, update=update)

    # -- inference ---------------------------------------------------------------------
    def logits(self, features: Events) -> torch.Tensor:
        """Raw logits [B, K]; never updates featurizer statistics. ``features`` may be
        feature dicts or their FeatureBatch, encoded without update (see ``Events``)."""
        batch = self._encoded(features, update=False)
        with torch.inference_mode():
            if self.network.training:  # Module.eval() walks every submodule: skip if set
                self.network.eval()
            return self.network(batch)

    def predict_proba(self, features: Events) -> np.ndarray:
        """The model's own softmax [B, K] (float64). Not calibrated: for strategies that
        reweight classes the caller divides by ``calibration_factors`` and renormalizes.

        Computed by ``models.kernels`` from the parameters as numpy arrays, without autograd
        or module dispatch; equal to the network module's softmax to 1e-6
        (tests/unit/test_fast_predict.py). Featurizing never updates statistics here.
        """
        if not len(features):
            return np.zeros((0, self.n_classes))
        if isinstance(features, FeatureBatch):
            arrays = (features.indices.numpy(), features.offsets.numpy(), features.weights.numpy())
            return kernels.predict_proba(self._weights, *arrays)
        if len(features) >= VECTOR_MIN_EVENTS:
            batch = self.featurizer.transform(features)
            return self.predict_proba(batch)
        return kernels.predict_proba(self._weights, *self.featurizer.encode(features))

    def export_weights(self) -> dict[str, np.ndarray]:
        """The network's parameters as named numpy views (see ``models.kernels``): what a
        serving process needs to predict, without torch's modules."""
        return kernels.export_weights(self.network)

    def calibration_factors(
        self,
        factors: Sequence[float],
        priors: Sequence[float],
        counts: Sequence[float] | None = None,
    ) -> list[float]:
        """Class weights the raw probabilities carry under the current strategy.

        ``rescaled``/``batch_normalized``/``class_gradient``/``rescaled_focal``: the factors;
        ``weighted``: N/(K n_c); ``logit_adjusted``: prior^-tau (normalized, sum p w = 1);
        ``oob``: its Poisson rates; ``none``/``focal``: ones. Pass them to
        ``models.calibration.prior_correct`` to get probabilities under the current prior.
        """
        # Served on every prediction, but the inputs change only with a learning step:
        # remember the last answer (a pure function of these vectors and the strategy).
        key = (
            tuple(factors),
            tuple(priors),
            None if counts is None else tuple(counts),
            tuple(self._class_counts.tolist()) if counts is None else None,
        )
        cached = self._calibration_cache
        if cached is not None and cached[0] == key:
            return list(cached[1])
        ctx = self._context(factors, priors, counts, self._class_counts)
        out = self.strategy.calibration_factors(ctx).tolist()
        self._calibration_cache = (key, out)
        return list(out)

    # -- learning ----------------------------------------------------------------------
    def learn(
        self,
        features: Events,
        labels: Sequence[int],
        factors: Sequence[float],
        priors: Sequence[float],
        counts: Sequence[float] | None = None,
    ) -> StepStats:
        """One guarded step on a labeled micro-batch; see the module docstring. A
        FeatureBatch for ``features`` must come from an encoding with update (the second
        of ``HashingFeaturizer.transform_pair``): the statistics have then already moved."""
        y = self._labels(labels)
        if len(features) != y.shape[0]:
            raise ValueError(f"features has {len(features)} events but labels has {y.shape[0]}")
        batch_counts = torch.bincount(y, minlength=self.n_classes).to(torch.float64)
        ctx = self._context(factors, priors, counts, self._class_counts + batch_counts)
        batch = self._encoded(features, update=True)
        self._class_counts += batch_counts
        self.events_seen += batch.size
        k = self.n_classes
        if batch.size == 0:
            return StepStats(0.0, [0.0] * k, [0.0] * k, 0.0, False, False, 0)

        params = self._params
        if self._analytic:
            return self._analytic_step(batch, y, ctx, params)
        if not self.network.training:
            self.network.train()
        logits = self.network(batch)
        raw = self.strategy.event_loss(logits, y, ctx)
        per_event = raw * cap_scale(raw, self.max_event_loss) * self.strategy.event_weights(y, ctx)
        total = self.strategy.reduce(per_event, y, ctx)
        per_class_loss = _per_class_mean(raw.detach(), y, k)
        loss = float(total.detach())

        clipped = False
        if not math.isfinite(loss):
            return self._skip(loss, per_class_loss, math.nan, batch.size)
        if self.strategy.requires_per_class_grads:
            result = self._class_gradients(per_event, y, logits, params, ctx)
            if result is None:
                return self._skip(loss, per_class_loss, math.nan, batch.size)
            grads, per_class_grad_norm, clipped = result
        else:
            logit_grad, *grads = torch.autograd.grad(total, [logits, *params])
            per_class_grad_norm = _per_class_norm(logit_grad, y, k)
        return self._apply(
            params, grads, loss, per_class_loss, per_class_grad_norm, clipped, batch.size
        )

    def _apply(
        self,
        params: list[torch.nn.Parameter],
        grads: list[torch.Tensor],
        loss: float,
        per_class_loss: list[float],
        per_class_grad_norm: list[float],
        clipped: bool,
        n: int,
    ) -> StepStats:
        """The guarded end of a step: skip on a non-finite gradient, clip, step, count."""
        grad_norm = _norm(grads)
        if not math.isfinite(grad_norm):
            return self._skip(loss, per_class_loss, grad_norm, n)
        if self.clip_norm is not None and grad_norm > self.clip_norm:
            grads = [g * (self.clip_norm / grad_norm) for g in grads]
            clipped = True
        if grad_norm > 0.0:
            # An exactly zero gradient (e.g. oob drew k = 0 for every event) teaches nothing;
            # stepping anyway would let Adam move on momentum alone.
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        self.clipped_steps += int(clipped)
        return StepStats(loss, per_class_loss, per_class_grad_norm, grad_norm, clipped, False, n)

    @np.errstate(all="ignore")  # infinities and NaNs are what the guards look for
    def _analytic_step(
        self,
        batch: FeatureBatch,
        y: torch.Tensor,
        ctx: StepContext,
        params: list[torch.nn.Parameter],
    ) -> StepStats:
        """``learn``'s step for a logistic regression and a cross-entropy strategy, with the
        gradients in closed form (``models.analytic``) instead of autograd: the same loss,
        per-event cap, class weights (drawn once, as autograd's path draws them),
        reduction and guards, the same gradient tensors up to float32 rounding
        (tests/unit/test_analytic.py)."""
        k = self.n_classes
        table, bias = self._weights["table"], self._weights["bias"]
        offsets, values = batch.offsets.numpy(), batch.weights.numpy()
        logits = analytic.bag_logits(table, bias, batch.indices.numpy(), offsets, values)
        if isinstance(self.strategy, LogitAdjusted):  # as its event_loss shifts them
            shift = self.strategy.tau * torch.log(ctx.priors.clamp(min=1e-12))
            logits += shift.numpy()
        labels = y.numpy()
        raw, dz = analytic.cross_entropy(logits, labels)
        # cap_scale's arithmetic on the arrays: min(1, cap / l_i), in float32
        coef = np.ones_like(raw)
        if self.max_event_loss is not None:
            over = raw > self.max_event_loss
            coef[over] = np.float32(self.max_event_loss) / raw[over]
        coef *= self.strategy.event_weights(y, ctx).numpy()
        total = self.strategy.reduce(torch.from_numpy(raw * coef), y, ctx)
        per_class_loss = _class_means(raw, labels, k)
        loss = float(total)
        if not math.isfinite(loss):
            return self._skip(loss, per_class_loss, math.nan, batch.size)
        # d total / d per_event_i: the reduction is a sum times a constant of the step
        scale = float(self.strategy.reduce(torch.ones(batch.size), y, ctx)) / batch.size
        coef *= np.float32(scale)
        logit_grad = dz * coef[:, None]
        slots, rows, bias_grad = analytic.bag_gradients(
            batch.indices.numpy(), offsets, values, logit_grad
        )
        weight_grad = torch.sparse_coo_tensor(
            torch.from_numpy(slots).unsqueeze(0), torch.from_numpy(rows), (table.shape[0], k),
            check_invariants=False, is_coalesced=True,  # sorted, unique featurizer slots
        )  # fmt: skip
        table_param = self.network.linear.weight  # type: ignore[union-attr]
        grads = [weight_grad if p is table_param else torch.from_numpy(bias_grad) for p in params]
        per_class_grad_norm = _class_norms(logit_grad, labels, k)
        return self._apply(
            params, grads, loss, per_class_loss, per_class_grad_norm, False, batch.size
        )

    def _class_gradients(
        self,
        per_event: torch.Tensor,
        y: torch.Tensor,
        logits: torch.Tensor,
        params: list[torch.nn.Parameter],
        ctx: StepContext,
    ) -> tuple[list[torch.Tensor], list[float], bool] | None:
        """class_gradient: per-class gradients, clipped per class, summed. None if non-finite."""
        b = y.shape[0]
        coefs = self.strategy.class_coefficients(y, ctx).tolist()  # type: ignore[attr-defined]
        present = [c for c in range(self.n_classes) if coefs[c] > 0.0]
        parts: dict[int, list[torch.Tensor]] = {}
        mean_norms = [math.nan] * self.n_classes
        logit_norms = [0.0] * self.n_classes
        for i, c in enumerate(present):
            mask = y == c
            # per_event carries coef_c * B / n_c, so this is coef_c * mean_c(l).
            part = per_event[mask].sum() / b
            logit_grad, *g = torch.autograd.grad(
                part, [logits, *params], retain_graph=i < len(present) - 1
            )
            norm = _norm(g)
            if not math.isfinite(norm):
                return None
            parts[c] = g
            logit_norms[c] = float(torch.linalg.vector_norm(logit_grad[mask]))
            # Clip on |g_c| (the unweighted per-class mean gradient), which does not depend
            # on how many classes the batch happens to hold.
            mean_norms[c] = norm / coefs[c]
        scales, clipped = self.strategy.clip_scales(mean_norms)  # type: ignore[attr-defined]
        grads: list[torch.Tensor] = []
        for c, g in parts.items():
            scaled = [gi * scales[c] for gi in g]
            grads = scaled if not grads else [a + b for a, b in zip(grads, scaled, strict=True)]
            logit_norms[c] *= scales[c]
        return grads, logit_norms, clipped

    def _skip(
        self, loss: float, per_class_loss: list[float], grad_norm: float, n: int
    ) -> StepStats:
        self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        k = self.n_classes
        return StepStats(loss, per_class_loss, [0.0] * k, grad_norm, False, True, n)

    # -- input checking ----------------------------------------------------------------
    def _labels(self, labels: Sequence[int]) -> torch.Tensor:
        if type(labels) is list and labels and all(type(c) is int for c in labels):
            # The usual case (plain ints, as the trainer passes them): one C-level
            # conversion and a range check instead of a Python loop.
            y = torch.tensor(labels, dtype=torch.int64)
            if 0 <= int(y.min()) and int(y.max()) < self.n_classes:
                return y
        out = []
        for i, label in enumerate(labels):
            if isinstance(label, bool):
                raise ValueError(f"labels[{i}] must be an int class index, got {label!r}")
            try:
                c = operator.index(label)
            except TypeError:
                raise ValueError(f"labels[{i}] must be an int class index, got {label!r}") from None
            if not 0 <= c < self.n_classes:
                raise ValueError(f"labels[{i}]={c} is outside [0, {self.n_classes})")
            out.append(c)
        return torch.tensor(out, dtype=torch.int64)

    def _context(
        self,
        factors: Sequence[float],
        priors: Sequence[float],
        counts: Sequence[float] | None,
        default_counts: torch.Tensor,
    ) -> StepContext:
        f = self._class_vector("factors", factors, positive=True)
        p = self._class_vector("priors", priors, positive=True)
        if counts is None:
            n = default_counts.to(torch.float32)
        else:
            n = self._class_vector("counts", counts, positive=False)
        return StepContext(factors=f, priors=p, counts=n, generator=self.generator)

    def _class_vector(self, name: str, values: Sequence[float], positive: bool) -> torch.Tensor:
        vals = [float(v) for v in values]
        if len(vals) != self.n_classes:
            raise ValueError(f"{name} must have {self.n_classes} values, got {len(vals)}")
        for c, v in enumerate(vals):
            if not math.isfinite(v) or v < 0 or (positive and v == 0):
                need = "> 0" if positive else ">= 0"
                raise ValueError(f"{name}[{c}]={v!r} must be finite and {need}")
        return torch.tensor(vals, dtype=torch.float32)

    # -- state -------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """Constructor arguments (plain values)."""
        return {
            "n_classes": self.n_classes,
            "network": self.network_kind,
            "hidden": list(self.hidden),
            "n_bits": self.n_bits,
            "optimizer": self.optimizer_kind,
            "lr": self.lr,
            "strategy": self.strategy_name,
            "strategy_params": dict(self.strategy_params),
            "max_event_loss": self.max_event_loss,
            "clip_norm": self.clip_norm,
            "seed": self.seed,
            "max_features": self.max_features,
            "numeric_bins": self.numeric_bins,
        }

    def state_dict(self) -> dict:
        """A detached copy of everything needed to continue exactly where this learner is.

        ``{"config": dict, "featurizer": dict, "network": {name: Tensor},
        "optimizer": torch optimizer state, "strategy": dict, "generator": uint8 Tensor,
        "class_counts": float64 Tensor [K], "counters": {steps, skipped_steps, clipped_steps,
        events_seen}}``. Plain values and tensors only (``torch.load(weights_only=True)``-safe).
        """
        return _detach_copy(
            {
                "config": self.config,
                "featurizer": self.featurizer.state_dict(),
                "network": dict(self.network.state_dict()),
                "optimizer": self.optimizer.state_dict(),
                "strategy": self.strategy.state_dict(),
                "generator": self.generator.get_state(),
                "class_counts": self._class_counts,
                "counters": {
                    "steps": self.steps,
                    "skipped_steps": self.skipped_steps,
                    "clipped_steps": self.clipped_steps,
                    "events_seen": self.events_seen,
                },
            }
        )

    def load_state_dict(self, state: dict) -> None:
        """Restore from ``state_dict()``; the model's shape must match this learner's.

        The constructor's lr wins over the snapshot's (a restart may change it on purpose).
        """
        cfg = state["config"]
        for key in ("n_classes", "network", "hidden", "n_bits", "optimizer"):
            mine = list(self.hidden) if key == "hidden" else self.config[key]
            theirs = list(cfg[key]) if key == "hidden" else cfg[key]
            if key == "hidden" and self.network_kind != "mlp":
                continue
            if mine != theirs:
                raise ValueError(f"snapshot {key}={theirs!r} does not match learner {key}={mine!r}")
        self.featurizer.load_state_dict(state["featurizer"])
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        if cfg.get("strategy") == self.strategy_name:
            self.strategy.load_state_dict(state.get("strategy", {}))
        self._calibration_cache = None
        self.generator.set_state(state["generator"])
        self._class_counts = state["class_counts"].to(torch.float64).clone()
        counters = state.get("counters", {})
        self.steps = int(counters.get("steps", 0))
        self.skipped_steps = int(counters.get("skipped_steps", 0))
        self.clipped_steps = int(counters.get("clipped_steps", 0))
        self.events_seen = int(counters.get("events_seen", 0))

    @classmethod
    def from_state_dict(cls, state: dict) -> OnlineLearner:
        """A learner built from the snapshot's own config, then restored."""
        cfg = dict(state["config"])
        cfg["hidden"] = tuple(cfg["hidden"])
        learner = cls(**cfg)
        learner.load_state_dict(state)
        return learner


def _norm(grads: Sequence[torch.Tensor]) -> float:
    """L2 norm over all gradients (sparse ones coalesced first: duplicates add up)."""
    if not grads:
        return 0.0
    norms = [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g) for g in grads]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


class PlainSGD:
    """SGD without momentum or weight decay: ``p -= lr * p.grad``, sparse gradients as is.

    The same arithmetic as ``torch.optim.SGD(params, lr)`` (its per-tensor path does
    ``p.add_(grad, alpha=-lr)``; foreach is not used for sparse or CPU tensors), so the
    parameters match it bit for bit (tests/unit/test_learner.py). It exists for start-up
    time: constructing any ``torch.optim`` optimizer imports ``torch._dynamo``, about 0.9 s
    of CPU, and the service must be ready within 3 s. Its ``state_dict`` has the
    ``torch.optim`` shape, so snapshots written with ``torch.optim.SGD`` still load.

    >>> p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> p.grad = torch.tensor([0.5, -1.0])
    >>> opt = PlainSGD([p], lr=0.1)
    >>> opt.step()
    >>> p.detach().tolist()
    [0.949999988079071, 2.0999999046325684]
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        self.param_groups: list[dict[str, Any]] = [{"params": list(params), "lr": float(lr)}]

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self) -> dict:
        """``{"state": {}, "param_groups": [{"lr", "momentum": 0, ..., "params": [i...]}]}``."""
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append(
                {
                    "lr": group["lr"],
                    "momentum": 0,
                    "dampening": 0,
                    "weight_decay": 0,
                    "nesterov": False,
                    "maximize": False,
                    "params": list(range(start, start + n)),
                }
            )
            start += n
        return {"state": {}, "param_groups": groups}

    def load_state_dict(self, state: dict) -> None:
        groups = state["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(g["params"]) != len(mine["params"])
            for g, mine in zip(groups, self.param_groups, strict=True)
        ):
            raise ValueError("optimizer state does not match this network's parameters")
        if state.get("state") or any(g.get("momentum", 0) for g in groups):
            raise ValueError("optimizer state has momentum; PlainSGD has none")
        for g, mine in zip(groups, self.param_groups, strict=True):
            mine["lr"] = float(g["lr"])


class SparseDenseAdam:
    """Adam for a network whose EmbeddingBag layers have sparse gradients.

    ``torch.optim.Adam`` refuses sparse gradients, so the embedding weights go to
    ``SparseAdam`` (lazy: moments of a slot move only when the slot is in the batch, which
    is what a hashed sparse input wants) and every other parameter to ``Adam``.
    """

    def __init__(self, network: torch.nn.Module, lr: float) -> None:
        sparse = [
            m.weight for m in network.modules() if isinstance(m, torch.nn.EmbeddingBag) and m.sparse
        ]
        dense = [p for p in network.parameters() if all(p is not s for s in sparse)]
        self.lr = lr
        self.sparse = torch.optim.SparseAdam(sparse, lr=lr)
        self.dense = torch.optim.Adam(dense, lr=lr)

    @property
    def param_groups(self) -> list[dict]:
        return self.sparse.param_groups + self.dense.param_groups

    def step(self) -> None:
        self.sparse.step()
        self.dense.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sparse.zero_grad(set_to_none=set_to_none)
        self.dense.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """``{"sparse": SparseAdam state, "dense": Adam state}``."""
        return {"sparse": self.sparse.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sparse.load_state_dict(state["sparse"])
        self.dense.load_state_dict(state["dense"])


def _per_class_mean(values: torch.Tensor, y: torch.Tensor, k: int) -> list[float]:
    sums = torch.zeros(k, dtype=values.dtype).index_add_(0, y, values)
    n = torch.bincount(y, minlength=k).clamp(min=1)
    return (sums / n).tolist()


def _class_means(values: np.ndarray, y: np.ndarray, k: int) -> list[float]:
    """``_per_class_mean`` on arrays (float64 sums: the same numbers to rounding)."""
    sums = np.bincount(y, weights=values, minlength=k)
    return (sums / np.maximum(np.bincount(y, minlength=k), 1)).tolist()


def _class_norms(grad: np.ndarray, y: np.ndarray, k: int) -> list[float]:
    """``_per_class_norm`` on arrays."""
    squares = (grad.astype(np.float64) ** 2).sum(axis=1)
    return np.sqrt(np.bincount(y, weights=squares, minlength=k)).tolist()


def _per_class_norm(grad: torch.Tensor, y: torch.Tensor, k: int) -> list[float]:
    sq = torch.zeros(k, dtype=grad.dtype).index_add_(0, y, grad.pow(2).sum(dim=1))
    return sq.sqrt().tolist()


def _detach_copy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _detach_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_detach_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_detach_copy(v) for v in obj)
    return obj
