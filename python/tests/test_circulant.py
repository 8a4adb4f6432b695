"""Block-circulant weights (`param W: circulant(k)[R, C]`) against the
PyTorch module of the repository (tests/conformance/circulant.py): its
dense expansion follows the documented convention, and a circulant LSTM
trained-shape module's state_dict runs in cellc as it runs in PyTorch.

Tolerance as the conformance suite's: 1e-5 relative to the largest value.
"""

import sys

import numpy as np
import pytest
import torch

import cellc
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "conformance"))
import circulant  # noqa: E402


def test_the_module_follows_the_documented_convention():
    # docs/language.md's worked example.
    w = torch.arange(1, 9, dtype=torch.float32).reshape(2, 2, 2)
    want = torch.tensor([[1, 2, 3, 4], [2, 1, 4, 3], [5, 6, 7, 8], [6, 5, 8, 7]], dtype=torch.float32)
    assert torch.equal(circulant.circulant_dense(w), want)
    w = torch.tensor([[[1.0, 2.0, 3.0]]])
    want = torch.tensor([[1, 3, 2], [2, 1, 3], [3, 2, 1]], dtype=torch.float32)
    assert torch.equal(circulant.circulant_dense(w), want)


@pytest.mark.parametrize("k", [4, 8, 16])
def test_a_circulant_lstm_runs_as_in_pytorch(k):
    torch.manual_seed(k)
    # Large enough that every matrix runs through its spectra (the FFT
    # products; `Structure::spectral_k`) for each k.
    X, H, T, B = 64, 96, 7, 3
    module = circulant.CirculantLSTMCell(X, H, k)
    x = torch.randn(T, B, X)
    h, c = 0.5 * torch.randn(B, H), 0.5 * torch.randn(B, H)
    cell = cellc.Cell.from_source(circulant.CirculantLSTMCell.source(k), name="clstm.rnn")
    weights = {n: t.detach().numpy() for n, t in module.state_dict().items()}
    kernel = cell.compile(weights)
    state = kernel.new_state(B)
    state.set("h", h.numpy())
    state.set("c", c.numpy())
    ys = kernel.run(x.numpy(), state)
    with torch.no_grad():
        want = []
        for t in range(T):
            h, c = module(x[t], (h, c))
            want.append(h)
        want = torch.stack(want).numpy()
    scale = float(np.abs(want).max())
    assert np.abs(np.asarray(ys) - want).max() <= 1e-5 * scale
    assert np.abs(state.get("c") - c.numpy()).max() <= 1e-5 * max(1.0, float(np.abs(c.numpy()).max()))


def test_a_dense_tensor_is_refused():
    module = circulant.CirculantLSTMCell(16, 16, 4)
    weights = {n: t.detach().numpy() for n, t in module.state_dict().items()}
    weights["ih_i.weight"] = np.zeros((16, 16), np.float32)
    cell = cellc.Cell.from_source(circulant.CirculantLSTMCell.source(4), name="clstm.rnn")
    # The sizes the tensors give disagree: refused, naming the circulant reading.
    with pytest.raises(cellc.Error, match="blocks of 4"):
        cell.compile(weights)


@pytest.mark.parametrize("k", [4, 8])
def test_a_circulant_lstm_trains_as_in_pytorch(k):
    """`cellc.torch.Cell` of the circulant LSTM: its parameters are the
    blocks' vectors (`[H/k, X/k, k]`), and their gradients (and the input's
    and initial states') are autograd's through the PyTorch module."""
    import cellc.torch

    torch.manual_seed(100 + k)
    # The forward pass through the spectra (FFT products) for both k.
    X, H, T, B = 32, 48, 5, 3
    module = circulant.CirculantLSTMCell(X, H, k)
    m = cellc.torch.Cell(circulant.CirculantLSTMCell.source(k), dims={"X": X, "H": H})
    assert tuple(m.W_i.shape) == (H // k, X // k, k)
    m.load_checkpoint(module.state_dict())
    x = torch.randn(T, B, X, requires_grad=True)
    h0 = (0.5 * torch.randn(B, H)).requires_grad_()
    c0 = (0.5 * torch.randn(B, H)).requires_grad_()
    x2, h2, c2 = (t.detach().clone().requires_grad_() for t in (x, h0, c0))
    h, c, ys = h0, c0, []
    for t in range(T):
        h, c = module(x[t], (h, c))
        ys.append(h)
    y_ref = torch.stack(ys)
    y, finals = m(x2, {"h": h2, "c": c2})
    w = torch.randn_like(y_ref)
    ((y_ref * w).sum() + c.sum()).backward()
    ((y * w).sum() + finals["c"].sum()).backward()

    def close(name, got, want):
        got, want = got.detach().numpy(), want.detach().numpy()
        assert got.shape == want.shape, name
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), name

    close("y", y, y_ref)
    close("dx", x2.grad, x.grad)
    close("dh0", h2.grad, h0.grad)
    close("dc0", c2.grad, c0.grad)
    want = m._cell.params_of({n: p.grad for n, p in module.named_parameters()})
    for name, g in zip(m.param_names, want):
        close(f"d{name}", getattr(m, name).grad, torch.from_numpy(g))
