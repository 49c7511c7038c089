"""Networks on hashed sparse input: logistic regression and an MLP.

Both read a FeatureBatch through an ``nn.EmbeddingBag(mode="sum", sparse=True)`` with
``per_sample_weights`` (a sparse matrix-vector product over the hashed slots) and return
logits ``[B, K]``. ``sparse=True`` makes the first layer's gradient a sparse tensor holding
only the slots the batch touched: with 2**18 slots a dense gradient would cost far more than
the step itself (plain SGD and SparseAdam apply sparse gradients directly).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.features import FeatureBatch

__all__ = ["MLP", "NETWORKS", "LogisticRegression", "build_network"]

NETWORKS = ("logreg", "mlp")


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: logits = W x + b, W stored as an EmbeddingBag.

    Weights start at zero (the convex problem needs no symmetry breaking), so a fresh model
    predicts the uniform distribution.
    """

    def __init__(self, n_inputs: int, n_classes: int) -> None:
        super().__init__()
        _check_sizes(n_inputs, n_classes)
        self.n_inputs = n_inputs
        self.n_classes = n_classes
        self.linear = nn.EmbeddingBag(n_inputs, n_classes, mode="sum", sparse=True)
        self.bias = nn.Parameter(torch.zeros(n_classes))
        nn.init.zeros_(self.linear.weight)

    def forward(self, batch: FeatureBatch) -> torch.Tensor:
        out = self.linear(batch.indices, batch.offsets, per_sample_weights=batch.weights)
        return out + self.bias


class MLP(nn.Module):
    """EmbeddingBag (first hidden layer) + ReLU + Linear layers -> K logits.

    The first layer's weight is ``embed_init + embed.weight``: a fixed random matrix (std
    0.1: an event touches only a handful of slots, so the usual fan-in scaling over
    ``2**n_bits`` inputs would make it vanish) plus what was learned, which starts at zero.
    The random part is regenerated from ``init_seed`` and left out of ``state_dict()``, so
    the rows of slots never seen stay zero in a snapshot, which packs them away
    (models/snapshot.py): a 2**18-slot MLP checkpoints in kilobytes, not 67 MB. Sums are
    linear, so this is the same network, and gradient steps on the learned part are the
    same steps.
    """

    embed_init: torch.Tensor  # buffers, declared for the type checker
    init_seed: torch.Tensor

    def __init__(
        self,
        n_inputs: int,
        n_classes: int,
        hidden: Sequence[int] = (64,),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(n_inputs, n_classes)
        hidden = tuple(hidden)
        if not hidden or any(
            not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden
        ):
            raise ValueError(
                f"hidden must be a non-empty sequence of positive ints, got {hidden!r}"
            )
        self.n_inputs = n_inputs
        self.n_classes = n_classes
        self.hidden = hidden
        self.embed = nn.EmbeddingBag(n_inputs, hidden[0], mode="sum", sparse=True)
        self.embed_bias = nn.Parameter(torch.zeros(hidden[0]))
        layers: list[nn.Module] = []
        for a, b in zip(hidden, hidden[1:] + (n_classes,), strict=True):
            layers += [nn.ReLU(), nn.Linear(a, b)]
        self.head = nn.Sequential(*layers)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self._embed_init_seed = seed  # the seed embed_init was drawn from
        self.register_buffer("init_seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer(
            "embed_init", _random_rows(seed, n_inputs, hidden[0]), persistent=False
        )
        nn.init.zeros_(self.embed.weight)
        for m in self.head:
            if isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features**0.5
                nn.init.uniform_(m.weight, -bound, bound, generator=generator)
                nn.init.zeros_(m.bias)
        self.register_load_state_dict_pre_hook(_upgrade_full_weight)
        self.register_load_state_dict_post_hook(_regenerate_init)

    def forward(self, batch: FeatureBatch) -> torch.Tensor:
        fixed = F.embedding_bag(
            batch.indices,
            self.embed_init,
            batch.offsets,
            mode="sum",
            per_sample_weights=batch.weights,
        )
        learned = self.embed(batch.indices, batch.offsets, per_sample_weights=batch.weights)
        return self.head(learned + fixed + self.embed_bias)


def _random_rows(seed: int, rows: int, cols: int) -> torch.Tensor:
    """The MLP's fixed first-layer matrix for ``seed``: N(0, 0.1^2) entries, reproducible."""
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.1


def _upgrade_full_weight(module: nn.Module, state: dict, prefix: str, *args: object) -> None:
    # Snapshots from before the split stored the whole first-layer weight and no seed:
    # keep this module's random part and load the difference as the learned one.
    assert isinstance(module, MLP)
    if prefix + "init_seed" not in state and prefix + "embed.weight" in state:
        state[prefix + "embed.weight"] = state[prefix + "embed.weight"] - module.embed_init
        state[prefix + "init_seed"] = module.init_seed.clone()


def _regenerate_init(module: nn.Module, incompatible: object) -> None:
    # A snapshot made with another seed brings its own init_seed: rebuild the fixed part.
    assert isinstance(module, MLP)
    seed = int(module.init_seed)
    if seed != module._embed_init_seed:
        rows, cols = module.embed_init.shape
        with torch.no_grad():  # in place: exported views (models.kernels) stay live
            module.embed_init.copy_(_random_rows(seed, rows, cols))
        module._embed_init_seed = seed


def build_network(
    kind: str,
    n_inputs: int,
    n_classes: int,
    hidden: Sequence[int] = (64,),
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Build a network by name ("logreg" or "mlp"); ``hidden`` is used by "mlp" only.

    >>> build_network("logreg", 16, 3).bias.shape
    torch.Size([3])
    >>> build_network("tree", 16, 3)
    Traceback (most recent call last):
    ...
    ValueError: unknown network 'tree'; expected one of ('logreg', 'mlp')
    """
    if kind == "logreg":
        return LogisticRegression(n_inputs, n_classes)
    if kind == "mlp":
        return MLP(n_inputs, n_classes, hidden, generator=generator)
    raise ValueError(f"unknown network {kind!r}; expected one of {NETWORKS}")


def _check_sizes(n_inputs: int, n_classes: int) -> None:
    if n_inputs < 1:
        raise ValueError(f"n_inputs must be positive, got {n_inputs!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes!r}")
