"""Networks on hashed EmbeddingBag input."""

import pytest
import torch

from models.features import HashingFeaturizer
from models.networks import MLP, LogisticRegression, build_network


def batch(n_bits=8):
    f = HashingFeaturizer(n_bits=n_bits)
    return f, f.transform([{"a": "x", "b": "y"}, {}, {"a": "z"}])


def test_logreg_is_a_linear_map_plus_bias():
    f, b = batch()
    net = LogisticRegression(f.n_inputs, 3)
    with torch.no_grad():
        net.linear.weight.normal_(generator=torch.Generator().manual_seed(0))
        net.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    out = net(b)
    dense = torch.zeros(3, f.n_inputs)
    for i in range(3):
        start = int(b.offsets[i])
        end = int(b.offsets[i + 1]) if i < 2 else b.indices.shape[0]
        for j in range(start, end):
            dense[i, b.indices[j]] += b.weights[j]
    assert torch.allclose(out, dense @ net.linear.weight + net.bias, atol=1e-6)


def test_fresh_logreg_predicts_uniform():
    f, b = batch()
    out = LogisticRegression(f.n_inputs, 4)(b)
    assert out.shape == (3, 4)
    assert torch.equal(out, torch.zeros(3, 4))


def test_mlp_shapes_depth_and_gradients():
    f, b = batch()
    net = MLP(f.n_inputs, 2, hidden=(8, 4), generator=torch.Generator().manual_seed(1))
    out = net(b)
    assert out.shape == (3, 2)
    out.sum().backward()
    assert net.embed.weight.grad is not None and net.embed.weight.grad.abs().sum() > 0
    linears = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 4), (4, 2)]


def test_mlp_init_is_reproducible_from_the_generator():
    f, _ = batch()
    a = MLP(f.n_inputs, 2, generator=torch.Generator().manual_seed(5))
    b = MLP(f.n_inputs, 2, generator=torch.Generator().manual_seed(5))
    c = MLP(f.n_inputs, 2, generator=torch.Generator().manual_seed(6))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.embed_init, b.embed_init)
    assert not torch.equal(a.embed_init, c.embed_init)
    assert not torch.equal(sa["init_seed"], sc["init_seed"])


def first_layer(net: MLP) -> torch.Tensor:
    return (net.embed_init + net.embed.weight).detach()


def test_mlp_state_leaves_the_random_part_out_and_snapshots_small():
    from models.snapshot import dumps

    net = MLP(2**18, 2, hidden=(64,), generator=torch.Generator().manual_seed(0))
    assert "embed_init" not in net.state_dict()
    with torch.no_grad():
        net.embed.weight[[3, 77]] += 1.0  # two slots learned something
    size = len(dumps(dict(net.state_dict())))
    # the whole first layer would be 2**18 * 64 * 4 bytes = 67 MB
    assert size < 50_000, size


def test_mlp_snapshot_from_another_seed_restores_the_same_function():
    f, b = batch()
    a = MLP(f.n_inputs, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a.embed.weight.normal_(generator=torch.Generator().manual_seed(9))
    other = MLP(f.n_inputs, 2, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(other(b), a(b))
    other.load_state_dict(a.state_dict())
    assert torch.equal(first_layer(other), first_layer(a))
    assert torch.equal(other(b), a(b))


def test_mlp_loads_a_snapshot_holding_the_whole_first_layer():
    """Snapshots written before the random part was split off carry the full weight and no
    ``init_seed``; they load as the same function."""
    f, b = batch()
    a = MLP(f.n_inputs, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a.embed.weight.normal_(generator=torch.Generator().manual_seed(9))
    old = dict(a.state_dict())
    old["embed.weight"] = first_layer(a)
    del old["init_seed"]
    other = MLP(f.n_inputs, 2, generator=torch.Generator().manual_seed(2))
    other.load_state_dict(old)
    assert torch.allclose(first_layer(other), first_layer(a), atol=1e-6)
    assert torch.allclose(other(b), a(b), atol=1e-5)


def test_build_network():
    assert isinstance(build_network("logreg", 16, 2), LogisticRegression)
    net = build_network("mlp", 16, 3, hidden=[5])
    assert isinstance(net, MLP) and net.hidden == (5,)
    with pytest.raises(ValueError, match="'cnn'"):
        build_network("cnn", 16, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((16, 1), "n_classes"),
        ((0, 2), "n_inputs"),
    ],
)
def test_bad_sizes_rejected(args, message):
    with pytest.raises(ValueError, match=message):
        LogisticRegression(*args)
    with pytest.raises(ValueError, match=message):
        MLP(*args)


@pytest.mark.parametrize("hidden", [(), (0,), (4, -1), (2.5,)])
def test_bad_hidden_rejected(hidden):
    with pytest.raises(ValueError, match="hidden"):
        MLP(16, 2, hidden=hidden)
