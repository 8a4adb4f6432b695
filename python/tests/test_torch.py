"""`cellc.from_torch` against PyTorch itself: every nn.LSTM / nn.GRU / nn.RNN
configuration of the Rust conformance suite (tests/conformance/cases/
networks.json), rebuilt from its state_dict and run by both; then a grid of
further configurations on random weights; the module's signature and shapes
(batch_first, unbatched input, hx, PackedSequence in and out); tensors in
giving tensors out."""

import re

import numpy as np
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import cellc
from conftest import assert_close, load, manifest

torch.set_num_threads(1)


def module_from_case(entry, weights):
    """The PyTorch module a networks.json case was made with."""
    spec = entry["module"]
    kind = re.match(r"nn\.(\w+)\(", spec).group(1)
    kw = dict(re.findall(r"(\w+)=(\w+)", spec))
    flag = lambda k: kw.get(k) == "True"  # noqa: E731
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    X = weights["weight_ih_l0"].shape[1]
    H = weights["weight_ih_l0"].shape[0] // gates
    common = dict(num_layers=int(kw["num_layers"]), bidirectional=flag("bidirectional"),
                  bias=flag("bias"), batch_first=flag("batch_first"))
    if kind == "LSTM":
        m = torch.nn.LSTM(X, H, proj_size=int(kw.get("proj_size", 0)), **common)
    elif kind == "GRU":
        m = torch.nn.GRU(X, H, **common)
    else:
        relu = "relu" in entry["cell"]
        m = torch.nn.RNN(X, H, nonlinearity="relu" if relu else "tanh", **common)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return m.eval(), kind, spec.endswith("packed")


def outputs_of(y, hx, kind):
    """(y as a padded tensor, [h_n] or [h_n, c_n])."""
    if isinstance(y, torch.nn.utils.rnn.PackedSequence):
        y = pad_packed_sequence(y)[0]
    return y, list(hx) if kind == "LSTM" else [hx]


CASES = manifest("networks.json")["cases"]


@pytest.mark.parametrize("entry", CASES, ids=[c["case"] for c in CASES])
def test_conformance_networks_match_pytorch(entry):
    case = entry["case"]
    weights, inputs, expected = load(case, "weights"), load(case, "inputs"), load(case, "expected")
    m, kind, packed = module_from_case(entry, weights)
    x = torch.from_numpy(inputs["x"])
    hx = None
    if "h" in inputs:
        hx = (torch.from_numpy(inputs["h"]), torch.from_numpy(inputs["c"])) if kind == "LSTM" \
            else torch.from_numpy(inputs["h"])
    arg = x
    if packed:
        arg = pack_padded_sequence(x, torch.from_numpy(inputs["lengths"]).long(),
                                   batch_first=m.batch_first, enforce_sorted=False)
    net = cellc.from_torch(m)
    with torch.no_grad():
        want_y, want_hx = m(arg, hx)
    got_y, got_hx = net(arg, hx)
    if packed:
        assert isinstance(got_y, torch.nn.utils.rnn.PackedSequence)
        assert torch.equal(got_y.batch_sizes, want_y.batch_sizes)
        assert torch.equal(got_y.sorted_indices, want_y.sorted_indices)
        assert_close(got_y.data, want_y.data, f"{case}: y.data")
    wy, wstates = outputs_of(want_y, want_hx, kind)
    gy, gstates = outputs_of(got_y, got_hx, kind)
    assert isinstance(gy, torch.Tensor) and gy.dtype == torch.float32
    assert_close(gy, wy, f"{case}: y")
    for name, g, w in zip("hc", gstates, wstates):
        assert_close(g, w, f"{case}: {name}_n")
    # And the reference outputs committed with the case (PyTorch's, padded
    # with zeros past each row's end, in the module's layout).
    if not packed:
        assert_close(gy, expected["y"], f"{case}: y (committed)")
    for name, g in zip("hc", gstates):
        assert_close(g, expected[name], f"{case}: {name} (committed)")


GRID = [
    # kind, layers, bidirectional, batch_first, bias, proj
    ("LSTM", 1, False, False, True, 0),
    ("LSTM", 2, True, True, True, 0),
    ("LSTM", 3, False, True, False, 0),
    ("LSTM", 2, True, False, True, 6),
    ("LSTM", 1, False, True, False, 3),
    ("GRU", 1, True, False, True, 0),
    ("GRU", 3, True, True, False, 0),
    ("RNN_tanh", 2, True, True, True, 0),
    ("RNN_relu", 3, False, False, False, 0),
]


def make(kind, X, H, layers, bidirectional, batch_first, bias, proj):
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    if kind == "LSTM":
        return torch.nn.LSTM(X, H, proj_size=proj, **kw)
    if kind == "GRU":
        return torch.nn.GRU(X, H, **kw)
    return torch.nn.RNN(X, H, nonlinearity=kind.split("_")[1], **kw)


def initial(m, kind, B, unbatched=False):
    D = 2 if m.bidirectional else 1
    Hout = m.proj_size if kind == "LSTM" and m.proj_size else m.hidden_size
    shape = (D * m.num_layers,) + (() if unbatched else (B,))
    h0 = torch.randn(*shape, Hout) * 0.5
    c0 = torch.randn(*shape, m.hidden_size) * 0.5
    return (h0, c0) if kind == "LSTM" else h0


def flat(hx):
    return list(hx) if isinstance(hx, tuple) else [hx]


@pytest.mark.parametrize("cfg", GRID, ids=["-".join(map(str, c)) for c in GRID])
def test_module_configurations_match_pytorch(cfg):
    torch.manual_seed(7)
    kind, layers, bidirectional, batch_first, bias, proj = cfg
    X, H, T, B = 9, 13, 6, 4
    m = make(kind, X, H, layers, bidirectional, batch_first, bias, proj).eval()
    net = cellc.from_torch(m)
    x = torch.randn(B, T, X) if batch_first else torch.randn(T, B, X)
    hx = initial(m, kind, B)
    with torch.no_grad():
        for args in [(x,), (x, hx)]:
            wy, wh = m(*args)
            gy, gh = net(*args)
            assert gy.shape == wy.shape
            assert_close(gy, wy, f"{cfg} y")
            for g, w in zip(flat(gh), flat(wh)):
                assert g.shape == w.shape
                assert_close(g, w, f"{cfg} state")
        # Unbatched: [T, X] in (batch_first does not apply), [D*L, H] states.
        xu = torch.randn(T, X)
        hu = initial(m, kind, B, unbatched=True)
        wy, wh = m(xu, hu)
        gy, gh = net(xu, hu)
        assert gy.shape == wy.shape
        assert_close(gy, wy, f"{cfg} unbatched y")
        for g, w in zip(flat(gh), flat(wh)):
            assert g.shape == w.shape
            assert_close(g, w, f"{cfg} unbatched state")


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_packed_sequences_come_back_packed_as_pytorch_packs_them(kind, enforce_sorted):
    torch.manual_seed(3)
    m = make(kind, 5, 8, 2, True, False, True, 0).eval()
    net = cellc.from_torch(m)
    lengths = torch.tensor([7, 7, 5, 3, 1, 1]) if enforce_sorted else torch.tensor([3, 7, 1, 5, 7, 2])
    x = torch.randn(7, len(lengths), 5)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    hx = initial(m, kind, len(lengths))
    with torch.no_grad():
        wy, wh = m(packed, hx)
    gy, gh = net(packed, hx)
    assert type(gy) is type(wy)
    assert torch.equal(gy.batch_sizes, wy.batch_sizes)
    assert (gy.sorted_indices is None) == (wy.sorted_indices is None)
    if wy.sorted_indices is not None:
        assert torch.equal(gy.sorted_indices, wy.sorted_indices)
        assert torch.equal(gy.unsorted_indices, wy.unsorted_indices)
    assert_close(gy.data, wy.data, "y.data")
    for g, w in zip(flat(gh), flat(wh)):
        assert_close(g, w, "state")


def test_arrays_come_back_as_they_went_in():
    torch.manual_seed(4)
    m = torch.nn.GRU(6, 10, num_layers=2, batch_first=True).eval()
    net = cellc.from_torch(m)
    x = torch.randn(3, 5, 6)
    ty, th = net(x)
    ny, nh = net(x.numpy())
    assert isinstance(ty, torch.Tensor) and isinstance(th, torch.Tensor)
    assert isinstance(ny, np.ndarray) and isinstance(nh, np.ndarray)
    assert np.array_equal(ty.numpy(), ny) and np.array_equal(th.numpy(), nh)
    # float64, a transposed view and a tensor that requires grad: converted once, same values.
    y64, _ = net(x.double())
    assert y64.dtype == torch.float32
    assert torch.equal(y64, ty)
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided.is_contiguous()
    assert torch.equal(net(strided)[0], ty)
    assert torch.equal(net(x.clone().requires_grad_())[0], ty)


def test_the_weights_are_the_modules_when_compiled():
    torch.manual_seed(5)
    m = torch.nn.LSTM(4, 6).eval()
    net = cellc.from_torch(m)
    x = torch.randn(3, 2, 4)
    before = net(x)[0]
    with torch.no_grad():
        m.weight_hh_l0.mul_(2)
        want = m(x)[0]
    assert torch.equal(net(x)[0], before)
    assert_close(cellc.from_torch(m)(x)[0], want, "recompiled")


def test_dropout_is_ignored_and_precisions_and_threads_are_options():
    torch.manual_seed(6)
    m = torch.nn.LSTM(16, 32, num_layers=2, dropout=0.5).eval()
    x = torch.randn(10, 3, 16)
    with torch.no_grad():
        want = m(x)[0]
    assert_close(cellc.from_torch(m)(x)[0], want, "dropout")
    one = cellc.from_torch(m, threads=1)(x)[0]
    two = cellc.from_torch(m, threads=2)(x)[0]
    assert torch.equal(one, two)
    # bf16 weights: close, not exact (8 bits of mantissa).
    bf16 = cellc.from_torch(m, precision="bf16")(x)[0]
    assert (bf16 - want).abs().max() < 3e-2
    # bf16 arithmetic (bf16 weights and inputs, float32 sums): as close.
    computed = cellc.from_torch(m, compute="bf16")(x)[0]
    assert (computed - want).abs().max() < 3e-2
    assert not torch.equal(computed, bf16)  # the inputs are rounded too
    with pytest.raises(cellc.OptionsError, match="compute `fp8`"):
        cellc.from_torch(m, compute="fp8")


def test_compute_int8_is_as_accurate_as_pytorchs_dynamic_quantization():
    """Integer arithmetic (int8 weights with a scale per row, activations
    quantized per batch row): against the float32 module, no further off
    than PyTorch's own dynamically quantized LSTM (int8 weights per tensor,
    activations per tensor); and not cellc's int8 storage, whose
    activations stay float32."""
    torch.manual_seed(7)
    m = torch.nn.LSTM(32, 64, num_layers=2).eval()
    x = torch.randn(20, 4, 32)
    with torch.no_grad():
        want = m(x)[0]

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(Wrap(m), {torch.nn.LSTM}, dtype=torch.qint8).m
    assert type(q) is not torch.nn.LSTM  # quantized, not the float module
    with torch.no_grad():
        theirs = (q(x)[0] - want).abs().max().item()
    computed = cellc.from_torch(m, compute="int8")(x)[0]
    ours = (computed - want).abs().max().item()
    assert 0 < ours <= theirs, (ours, theirs)
    stored = cellc.from_torch(m, precision="int8")(x)[0]
    assert not torch.equal(computed, stored)
    with pytest.raises(cellc.OptionsError, match="compute int8"):
        cellc.from_torch(m, compute="int8", precision="bf16")


def test_modules_cellc_does_not_take_are_refused_by_name():
    with pytest.raises(cellc.OptionsError, match="nn.LSTM, nn.GRU and nn.RNN, not Linear"):
        cellc.from_torch(torch.nn.Linear(3, 4))
    net = cellc.from_torch(torch.nn.LSTM(4, 5))
    with pytest.raises(cellc.ShapeError, match=r"hx: 1 tensors; LSTM takes \(h_0, c_0\)"):
        net(torch.randn(2, 1, 4), (torch.zeros(1, 1, 5),))
    with pytest.raises(cellc.ShapeError, match="input: shape"):
        net(torch.randn(2, 1, 1, 4))
    with pytest.raises(cellc.ShapeError):
        net(torch.randn(2, 1, 3))  # X = 3, the module takes 4
    with pytest.raises(cellc.ShapeError):
        net(torch.randn(2, 3, 4), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)))  # batch 2 states, batch 3 input
