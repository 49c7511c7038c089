"""Loss strategies for imbalanced online learning, selectable by name.

A strategy turns logits and labels into a scalar training loss in three parts, so the
learner can cap each event's pull in between:

* ``event_loss``: the unweighted per-event loss ``l_i`` (cross-entropy, focal, logit-adjusted);
* ``event_weights``: the class weight ``w_{y_i}`` of each event;
* ``reduce``: per-event terms ``w_i l_i`` -> scalar (default ``sum / B``).

``calibration_factors`` says which class weights the model's raw probabilities implicitly
carry (the caller divides by them to get back to the current prior; see models/calibration.py).

``none``              mean cross-entropy.
``weighted``          w_c = N / (K n_c) from cumulative counts, unnormalized (the classic baseline).
``batch_normalized``  sum(w l) / sum(w) with w = factors: a no-op on a one-class batch, so it
                      stops rebalancing at batch size 1 (kept to show that trap).
``rescaled``          sum(w_y l) / B with the smoothed, expectation-normalized factors.
``class_gradient``    per-class mean gradients combined with target weights, each clipped at
                      k_clip x its running-average norm (the learner does the combination).
``focal``             (1 - p_t)^gamma_focal x CE.
``rescaled_focal``    factors x focal term, reduced like ``rescaled``.
``logit_adjusted``    CE on logits + tau log(prior) (Menon et al.); raw logits are balanced scores.
``oob``               each event weighted k ~ Poisson(lambda_c), lambda_c = min(max_p / p_c,
                      lambda_max) (Wang, Minku & Yao's oversampling online bagging, one member).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "STRATEGIES",
    "BatchNormalized",
    "ClassGradient",
    "Focal",
    "LogitAdjusted",
    "NoWeighting",
    "OnlineBagging",
    "Rescaled",
    "RescaledFocal",
    "StepContext",
    "Strategy",
    "Weighted",
    "build_strategy",
    "focal_term",
    "presence_probability",
]


@dataclass
class StepContext:
    """What a strategy may read during one step (all float tensors of shape [K])."""

    factors: torch.Tensor
    priors: torch.Tensor
    counts: torch.Tensor
    generator: torch.Generator


class Strategy:
    """Cross-entropy, unweighted, mean-reduced; the base every strategy refines."""

    name = "none"
    requires_per_class_grads = False

    def event_loss(self, logits: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Unweighted per-event loss l_i, shape [B]."""
        return F.cross_entropy(logits, y, reduction="none")

    def event_weights(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Per-event class weight w_{y_i}, shape [B] (not differentiated)."""
        return torch.ones(y.shape[0], dtype=torch.float32)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Per-event loss terms including weights, shape [B]."""
        return self.event_loss(logits, y, ctx) * self.event_weights(y, ctx)

    def reduce(self, per_event: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Scalar loss from per-event terms; ``sum / B``."""
        return per_event.sum() / max(per_event.shape[0], 1)

    def calibration_factors(self, ctx: StepContext) -> torch.Tensor:
        """Class weights implied in the raw probabilities (ones: none)."""
        return torch.ones_like(ctx.priors)

    @property
    def params(self) -> dict:
        """Constructor arguments, as stored in snapshots."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class NoWeighting(Strategy):
    name = "none"


class Weighted(Strategy):
    """Classic class weights N / (K n_c) from cumulative counts (unnormalized)."""

    name = "weighted"

    def _weights(self, ctx: StepContext) -> torch.Tensor:
        counts = ctx.counts.clamp(min=1.0)
        return counts.sum() / (counts.shape[0] * counts)

    def event_weights(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._weights(ctx)[y]

    def calibration_factors(self, ctx: StepContext) -> torch.Tensor:
        return self._weights(ctx)


class BatchNormalized(Strategy):
    """sum(w l) / sum(w): the textbook form, which a one-class batch reduces to plain CE."""

    name = "batch_normalized"

    def event_weights(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return ctx.factors[y]

    def reduce(self, per_event: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return per_event.sum() / ctx.factors[y].sum()

    def calibration_factors(self, ctx: StepContext) -> torch.Tensor:
        return ctx.factors.clone()


class Rescaled(Strategy):
    """sum(w_y l) / B: factors are normalized in expectation (sum p w = 1), not per batch."""

    name = "rescaled"

    def event_weights(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return ctx.factors[y]

    def calibration_factors(self, ctx: StepContext) -> torch.Tensor:
        return ctx.factors.clone()


def focal_term(ce: torch.Tensor, gamma_focal: float) -> torch.Tensor:
    """Focal loss from cross-entropy values: (1 - p_t)^gamma x CE, with p_t = exp(-CE).

    >>> focal_term(torch.tensor([0.0, math.log(2.0)]), 2.0).tolist()
    [0.0, 0.1732867956161499]
    """
    pt = torch.exp(-ce)
    return (1.0 - pt).clamp(min=0.0).pow(gamma_focal) * ce


class Focal(Strategy):
    """Focal loss (Lin et al.): down-weights events the model already gets right."""

    name = "focal"

    def __init__(self, gamma_focal: float = 2.0) -> None:
        if not math.isfinite(gamma_focal) or gamma_focal < 0:
            raise ValueError(f"gamma_focal must be a finite number >= 0, got {gamma_focal!r}")
        self.gamma_focal = float(gamma_focal)

    def event_loss(self, logits: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return focal_term(F.cross_entropy(logits, y, reduction="none"), self.gamma_focal)

    @property
    def params(self) -> dict:
        return {"gamma_focal": self.gamma_focal}


class RescaledFocal(Focal):
    """Focal term times the rescaling factors, reduced by B like ``rescaled``."""

    name = "rescaled_focal"

    def event_weights(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return ctx.factors[y]

    def calibration_factors(self, ctx: StepContext) -> torch.Tensor:
        return ctx.factors.clone()


class LogitAdjusted(Strategy):
    """Logit-adjusted CE (Menon et al. 2021): train on logits + tau log(prior).

    The network's raw logits then estimate balanced scores, roughly log p(x|y), so its
    softmax already carries the weights prior^-tau; ``calibration_factors`` returns them
    (normalized so sum p w = 1) for the caller to divide out.
    """

    name = "logit_adjusted"

    def __init__(self, tau: float = 1.0) -> None:
        if not math.isfinite(tau) or tau < 0:
            raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")
        self.tau = float(tau)

    def event_loss(self, logits: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        shift = self.tau * torch.log(ctx.priors.clamp(min=1e-12))
        return F.cross_entropy(logits + shift, y, reduction="none")

    def calibration_factors(self, ctx: StepContext) -> torch.Tensor:
        w = ctx.priors.clamp(min=1e-12).pow(-self.tau)
        return w / (ctx.priors * w).sum()

    @property
    def params(self) -> dict:
        return {"tau": self.tau}


class OnlineBagging(Strategy):
    """One member of oversampling online bagging: weight k_i ~ Poisson(lambda_{y_i}).

    Draws come from the learner's seeded generator, so a run (and a restored snapshot) is
    reproducible.
    """

    name = "oob"

    def __init__(self, lambda_max: float = 10.0) -> None:
        if not math.isfinite(lambda_max) or lambda_max < 1:
            raise ValueError(f"lambda_max must be a finite number >= 1, got {lambda_max!r}")
        self.lambda_max = float(lambda_max)

    def rates(self, ctx: StepContext) -> torch.Tensor:
        p = ctx.priors.clamp(min=1e-12)
        return (p.max() / p).clamp(max=self.lambda_max)

    def event_weights(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return torch.poisson(self.rates(ctx)[y].to(torch.float32), generator=ctx.generator)

    def calibration_factors(self, ctx: StepContext) -> torch.Tensor:
        return self.rates(ctx)

    @property
    def params(self) -> dict:
        return {"lambda_max": self.lambda_max}


def presence_probability(prior: float, batch_size: int) -> float:
    """Chance that a class of prior ``prior`` appears in a batch: 1 - (1 - p)^B.

    >>> presence_probability(0.02, 1)
    0.02
    >>> presence_probability(1.0, 4)
    1.0
    >>> round(presence_probability(0.5, 3), 3)
    0.875
    """
    if prior >= 1.0:
        return 1.0
    # expm1/log1p keep small priors accurate (B = 1 gives p back exactly).
    return -math.expm1(batch_size * math.log1p(-prior))


class ClassGradient(Strategy):
    """Gradient-level balancing: per-class mean gradients, target weights, per-class clipping.

    The learner computes g_c = grad of the mean loss over the batch's class-c events and
    applies ``sum_c coef_c * scale_c * g_c``:

    * ``coef_c = a_c / P(c present in a batch of B)``, with target weights
      ``a_c = p_c w_c / sum_k p_k w_k``. Dividing by the presence probability keeps the
      expected step equal to ``sum_c a_c E[g_c]`` whatever the batch size; at B = 1 it is
      exactly ``w_c`` times the event's gradient, so it does not fall into the batch-size-1
      trap that per-batch normalization does.
    * ``scale_c = min(1, k_clip * avg_c / |g_c|)`` once ``warmup`` norms of class c were
      seen, where avg_c is a running average of class c's (clipped) mean-gradient norms.
      Clipping per class, rather than the combined gradient, matters: the combined norm
      jumps whenever a rare class is present, and a global clip would cut exactly those steps.
    """

    name = "class_gradient"
    requires_per_class_grads = True

    def __init__(self, k_clip: float = 3.0, warmup: int = 10, avg_decay: float = 0.99) -> None:
        if not math.isfinite(k_clip) or k_clip <= 0:
            raise ValueError(f"k_clip must be a finite number > 0, got {k_clip!r}")
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
        if not 0.0 < avg_decay < 1.0:
            raise ValueError(f"avg_decay must be in (0, 1), got {avg_decay!r}")
        self.k_clip = float(k_clip)
        self.warmup = warmup
        self.avg_decay = float(avg_decay)
        self._reset()

    def _reset(self) -> None:
        self._avg: list[float] = []
        self._seen: list[int] = []

    def event_weights(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        # coef_c * B / n_c, so that ``reduce`` (sum / B) gives sum_c coef_c * mean_c(l): the
        # combined loss whose gradient is the unclipped combination.
        n = torch.bincount(y, minlength=ctx.priors.shape[0]).clamp(min=1).to(torch.float32)
        return (self.class_coefficients(y, ctx) * y.shape[0] / n)[y]

    def _presence(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        b = int(y.shape[0])
        return torch.tensor([presence_probability(float(p), b) for p in ctx.priors])

    def class_coefficients(self, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """coef_c for the per-class mean gradients of this batch (0 for absent classes)."""
        a = ctx.priors * ctx.factors
        a = a / a.sum()
        coef = a / self._presence(y, ctx).clamp(min=1e-12)
        present = torch.bincount(y, minlength=ctx.priors.shape[0]) > 0
        return torch.where(present, coef, torch.zeros_like(coef))

    def clip_scales(self, norms: list[float]) -> tuple[list[float], bool]:
        """Scale per class (1.0 = untouched) for the given mean-gradient norms (nan = absent).

        Updates each present class's running average with its clipped norm.
        """
        if len(self._avg) != len(norms):
            self._avg = [0.0] * len(norms)
            self._seen = [0] * len(norms)
        scales, clipped = [], False
        for c, g in enumerate(norms):
            scale = 1.0
            if math.isfinite(g):
                limit = self.k_clip * self._avg[c]
                if self._seen[c] >= self.warmup and g > limit > 0.0:
                    scale, clipped = limit / g, True
                n = self._seen[c] + 1
                # Plain running mean at first, then an EMA with horizon 1/(1 - avg_decay).
                rate = max(1.0 / n, 1.0 - self.avg_decay)
                self._avg[c] += rate * (g * scale - self._avg[c])
                self._seen[c] = n
            scales.append(scale)
        return scales, clipped

    def calibration_factors(self, ctx: StepContext) -> torch.Tensor:
        return ctx.factors.clone()

    @property
    def params(self) -> dict:
        return {"k_clip": self.k_clip, "warmup": self.warmup, "avg_decay": self.avg_decay}

    def state_dict(self) -> dict:
        """``{"avg": [float] per class, "seen": [int] per class}``."""
        return {"avg": list(self._avg), "seen": list(self._seen)}

    def load_state_dict(self, state: dict) -> None:
        self._avg = [float(v) for v in state.get("avg", [])]
        self._seen = [int(v) for v in state.get("seen", [])]


_REGISTRY: dict[str, type[Strategy]] = {
    "none": NoWeighting,
    "weighted": Weighted,
    "batch_normalized": BatchNormalized,
    "rescaled": Rescaled,
    "class_gradient": ClassGradient,
    "focal": Focal,
    "rescaled_focal": RescaledFocal,
    "logit_adjusted": LogitAdjusted,
    "oob": OnlineBagging,
}
STRATEGIES = tuple(_REGISTRY)


def build_strategy(name: str, **params: object) -> Strategy:
    """Build a strategy by name with its hyperparameters.

    >>> build_strategy("focal", gamma_focal=1.0)
    Focal(gamma_focal=1.0)
    >>> build_strategy("rescaled", tau=1.0)
    Traceback (most recent call last):
    ...
    ValueError: strategy 'rescaled' takes no parameter 'tau' (accepted: none)
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    if cls.__init__ is object.__init__:
        accepted = []
    for key in params:
        if key not in accepted:
            raise ValueError(
                f"strategy {name!r} takes no parameter {key!r} "
                f"(accepted: {', '.join(accepted) or 'none'})"
            )
    return cls(**params)  # type: ignore[arg-type]
