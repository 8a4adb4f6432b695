"""Training from PyTorch (`cellc.torch.Cell`): the outputs and every
gradient (parameters, input, initial states) of the example cells against
`torch.autograd` through `nn.LSTM`, `nn.GRU` and `nn.RNN` with the same
weights; a model trained with Adam by cellc and by PyTorch from the same
start; the module's parameters and errors.

Tolerance: max |cellc - torch| <= 1e-4 * max(1, max |torch|) per tensor:
both sides sum in float32 in different orders, over a few steps forward
and back (the forward pass alone agrees to the conformance suite's 1e-5).
"""

import numpy as np
import pytest
import torch

import cellc
import cellc.torch
from conftest import EXAMPLES

torch.set_num_threads(1)
TOLERANCE = 1e-4


def close(name, got, want):
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    err = float(np.abs(got - want).max()) if want.size else 0.0
    assert err <= TOLERANCE * scale, f"{name}: error {err:.3g} (scale {scale:.3g})"


MODULES = [
    ("lstm", lambda X, H: torch.nn.LSTM(X, H), ("h", "c")),
    ("gru", lambda X, H: torch.nn.GRU(X, H), ("h",)),
    ("rnn_tanh", lambda X, H: torch.nn.RNN(X, H), ("h",)),
    ("rnn_relu", lambda X, H: torch.nn.RNN(X, H, nonlinearity="relu"), ("h",)),
]


@pytest.mark.parametrize("name,make,states", MODULES, ids=[m[0] for m in MODULES])
@pytest.mark.parametrize("T,B,X,H", [(5, 3, 4, 6), (7, 2, 9, 16)])
def test_gradients_match_torch_autograd(name, make, states, T, B, X, H):
    torch.manual_seed(T * 100 + X)
    ref = make(X, H)
    m = cellc.torch.Cell(EXAMPLES / f"{name}.rnn", dims={"X": X, "H": H})
    m.load_checkpoint(ref.state_dict())
    x = torch.randn(T, B, X, requires_grad=True)
    h0 = {s: (torch.randn(B, H) * 0.5).requires_grad_() for s in states}
    x2 = x.detach().clone().requires_grad_()
    h02 = {s: h.detach().clone().requires_grad_() for s, h in h0.items()}
    hx = tuple(h[None] for h in h0.values())
    y_ref, fin = ref(x, hx if len(hx) == 2 else hx[0])
    fin = fin if isinstance(fin, tuple) else (fin,)
    y, finals = m(x2, h02)
    close(f"{name} y", y, y_ref)
    wy = torch.randn_like(y_ref)
    wh = [torch.randn(B, H) for _ in states]
    loss_ref = (y_ref * wy).sum() + sum((f[0] * w).sum() for f, w in zip(fin, wh))
    loss = (y * wy).sum() + sum((finals[s] * w).sum() for s, w in zip(states, wh))
    loss_ref.backward()
    loss.backward()
    close(f"{name} dx", x2.grad, x.grad)
    for s in states:
        close(f"{name} d{s}0", h02[s].grad, h0[s].grad)
    # The module's gradients in the cell's terms, through the same bindings.
    want = m._cell.params_of({k: p.grad for k, p in ref.named_parameters()})
    for pname, w in zip(m.param_names, want):
        close(f"{name} d{pname}", getattr(m, pname).grad, w)


def test_parameters_are_attributes_initialised_like_nn_lstm():
    m = cellc.torch.Cell(EXAMPLES / "lstm.rnn", dims={"X": 8, "H": 16})
    names = [n for n, _ in m.named_parameters()]
    assert names == m.param_names and "W_ii" in names
    assert tuple(m.W_ii.shape) == (16, 8)
    bound = 1 / 16 ** 0.5
    for p in m.parameters():
        assert float(p.detach().abs().max()) <= bound
        assert float(p.detach().std()) > bound / 4  # not zeros


def test_source_text_several_inputs_and_errors():
    src = """
        dim X = 3, Z = 2, H = 4
        input x: [X], z: [Z]
        state h: [H]
        output y: [H], s: [1]
        param W: [H, X]
        param V: [H, Z]
        param U: [H, H]
        h' = tanh(W @ x + V @ z + U @ h)
        y = h'
        s = sum(h')
    """
    m = cellc.torch.Cell(src)
    x = torch.randn(3, 2, 3, requires_grad=True)
    z = torch.randn(3, 2, 2, requires_grad=True)
    y, finals = m({"x": x, "z": z})
    assert set(y) == {"y", "s"} and tuple(y["s"].shape) == (3, 2, 1)
    (y["y"].sum() + y["s"].sum() + finals["h"].sum()).backward()
    assert x.grad is not None and z.grad is not None and m.W.grad is not None
    with pytest.raises(cellc.ShapeError, match="missing"):
        m({"x": x})
    with pytest.raises(cellc.ShapeError, match="pass a dict"):
        m(x)
    with pytest.raises(cellc.ShapeError, match="expected"):
        m({"x": torch.randn(3, 2, 5), "z": z})
    with pytest.raises(cellc.ShapeError, match="not states"):
        m({"x": x, "z": z}, {"c": torch.zeros(2, 4)})


def test_adam_training_follows_pytorch():
    """The same LSTM trained by cellc and by PyTorch with Adam from the same
    weights on the same batches: the losses stay within 1e-3 relative."""
    torch.manual_seed(0)
    X, H, T, B = 4, 12, 10, 8
    ref = torch.nn.LSTM(X, H)
    head_ref = torch.nn.Linear(H, 1)
    m = cellc.torch.Cell(EXAMPLES / "lstm.rnn", dims={"X": X, "H": H})
    m.load_checkpoint(ref.state_dict())
    head = torch.nn.Linear(H, 1)
    head.load_state_dict(head_ref.state_dict())
    opt_ref = torch.optim.Adam(list(ref.parameters()) + list(head_ref.parameters()), lr=1e-2)
    opt = torch.optim.Adam(list(m.parameters()) + list(head.parameters()), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for step in range(60):
        # The adding problem: the sum of the two marked numbers.
        values = torch.rand(T, B, 1, generator=gen)
        marks = torch.zeros(T, B, 1)
        for b in range(B):
            i, j = torch.randperm(T, generator=gen)[:2]
            marks[i, b] = marks[j, b] = 1
        x = torch.cat([values, marks, torch.zeros(T, B, X - 2)], dim=2)
        target = (values * marks).sum(0)
        y_ref, _ = ref(x)
        loss_ref = ((head_ref(y_ref[-1]) - target) ** 2).mean()
        y, _ = m(x)
        loss = ((head(y[-1]) - target) ** 2).mean()
        assert abs(loss.item() - loss_ref.item()) <= 1e-3 * abs(loss_ref.item()), (step, loss, loss_ref)
        opt_ref.zero_grad()
        loss_ref.backward()
        opt_ref.step()
        opt.zero_grad()
        loss.backward()
        opt.step()
