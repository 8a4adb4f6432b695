"""Training from PyTorch (`cellc.torch.Cell`): the outputs and every
gradient (parameters, input, initial states) of the example cells against
`torch.autograd` through `nn.LSTM`, `nn.GRU` and `nn.RNN` with the same
weights; a model trained with Adam by cellc and by PyTorch from the same
start; the module's parameters and errors.

Tolerance: max |cellc - torch| <= 1e-4 * max(1, max |torch|) per tensor:
both sides sum in float32 in different orders, over a few steps forward
and back (the forward pass alone agrees to the conformance suite's 1e-5).
"""

import sys

import numpy as np
import pytest
import torch

import cellc
import cellc.torch
from conftest import EXAMPLES, REPO

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
    dims = {"H": H} if name == "sru" else {"X": X, "H": H}
    m = cellc.torch.Cell(EXAMPLES / f"{name}.rnn", dims=dims)
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


def adding_batch(gen, T, B, X):
    """The adding problem: `X`-wide inputs (a value, a mark, zeros) whose
    target is the sum of the two marked values."""
    values = torch.rand(T, B, 1, generator=gen)
    marks = torch.zeros(T, B, 1)
    for b in range(B):
        i, j = torch.randperm(T, generator=gen)[:2]
        marks[i, b] = marks[j, b] = 1
    x = torch.cat([values, marks, torch.zeros(T, B, X - 2)], dim=2)
    return x, (values * marks).sum(0)


def train_both(ref, m, run_ref, run, steps, lr, X, T, B):
    """Adam on the adding problem for `steps` steps, the reference module and
    the cellc cell from the same weights (each with a linear head, also the
    same): asserts the losses within 1e-3 relative at every step, returns
    cellc's losses."""
    m.load_checkpoint(ref.state_dict())
    H = m._states[1][0]
    head_ref = torch.nn.Linear(H, 1)
    head = torch.nn.Linear(H, 1)
    head.load_state_dict(head_ref.state_dict())
    opt_ref = torch.optim.Adam(list(ref.parameters()) + list(head_ref.parameters()), lr=lr)
    opt = torch.optim.Adam(list(m.parameters()) + list(head.parameters()), lr=lr)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for step in range(steps):
        x, target = adding_batch(gen, T, B, X)
        loss_ref = ((head_ref(run_ref(x)[-1]) - target) ** 2).mean()
        loss = ((head(run(x)[-1]) - target) ** 2).mean()
        assert abs(loss.item() - loss_ref.item()) <= 1e-3 * abs(loss_ref.item()), (step, loss, loss_ref)
        losses.append(loss.item())
        for o, l in ((opt_ref, loss_ref), (opt, loss)):
            o.zero_grad()
            l.backward()
            o.step()
    return losses


def test_adam_training_follows_pytorch():
    """The same LSTM trained by cellc and by PyTorch with Adam from the same
    weights on the same batches: the losses stay within 1e-3 relative."""
    torch.manual_seed(0)
    X, H, T, B = 4, 12, 10, 8
    ref = torch.nn.LSTM(X, H)
    m = cellc.torch.Cell(EXAMPLES / "lstm.rnn", dims={"X": X, "H": H})
    train_both(ref, m, lambda x: ref(x)[0], lambda x: m(x)[0], 60, 1e-2, X, T, B)


class LayerNormLSTM(torch.nn.Module):
    """examples/layernorm_lstm.rnn in PyTorch, with the names its bindings
    read (as tests/conformance/gen.py's LayerNormLSTMCell), over a sequence."""

    def __init__(self, X, H):
        super().__init__()
        s = H ** -0.5
        self.weight_ih = torch.nn.Parameter(torch.empty(4 * H, X).uniform_(-s, s))
        self.weight_hh = torch.nn.Parameter(torch.empty(4 * H, H).uniform_(-s, s))
        for n in "ifgoc":
            ln = torch.nn.LayerNorm(H, eps=1e-5)
            with torch.no_grad():  # not the identity, so the gains train visibly
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.5, 0.5)
            setattr(self, f"ln_{n}", ln)

    def forward(self, x, h, c):
        ys = []
        for t in range(x.shape[0]):
            i, f, g, o = (x[t] @ self.weight_ih.T + h @ self.weight_hh.T).chunk(4, 1)
            i = torch.sigmoid(self.ln_i(i))
            f = torch.sigmoid(self.ln_f(f) + 1.0)
            g = torch.tanh(self.ln_g(g))
            o = torch.sigmoid(self.ln_o(o))
            c = self.ln_c(f * c + i * g)
            h = o * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys), h, c


def test_layernorm_lstm_gradients_match_autograd():
    torch.manual_seed(3)
    T, B, X, H = 6, 4, 5, 8
    ref = LayerNormLSTM(X, H)
    m = cellc.torch.Cell(EXAMPLES / "layernorm_lstm.rnn", dims={"X": X, "H": H})
    m.load_checkpoint(ref.state_dict())
    x = torch.randn(T, B, X, requires_grad=True)
    h0, c0 = torch.randn(B, H, requires_grad=True), torch.randn(B, H, requires_grad=True)
    x2, h2, c2 = (t.detach().clone().requires_grad_() for t in (x, h0, c0))
    y_ref, h_ref, c_ref = ref(x, h0, c0)
    y, finals = m(x2, {"h": h2, "c": c2})
    close("y", y, y_ref)
    wy, wh, wc = torch.randn_like(y_ref), torch.randn(B, H), torch.randn(B, H)
    ((y_ref * wy).sum() + (h_ref * wh).sum() + (c_ref * wc).sum()).backward()
    ((y * wy).sum() + (finals["h"] * wh).sum() + (finals["c"] * wc).sum()).backward()
    for name, a, b in [("dx", x2, x), ("dh0", h2, h0), ("dc0", c2, c0)]:
        close(name, a.grad, b.grad)
    want = m._cell.params_of({k: p.grad for k, p in ref.named_parameters()})
    for pname, w in zip(m.param_names, want):
        close(f"d{pname}", getattr(m, pname).grad, w)


def test_layernorm_lstm_trains_as_pytorch_does():
    """The issue's run: a layer-normalised LSTM on the adding problem with
    Adam for 200 steps, cellc and the PyTorch reference from the same
    weights: the losses agree within 1e-3 relative at every step."""
    torch.manual_seed(0)
    X, H, T, B = 2, 16, 12, 16
    ref = LayerNormLSTM(X, H)
    m = cellc.torch.Cell(EXAMPLES / "layernorm_lstm.rnn", dims={"X": X, "H": H})
    zeros = torch.zeros(B, H)
    losses = train_both(ref, m, lambda x: ref(x, zeros, zeros)[0], lambda x: m(x)[0], 200, 3e-3, X, T, B)
    # It learns: the last losses are a quarter below the first (200 steps
    # are the start of learning the adding problem: first the mean).
    assert np.mean(losses[-20:]) < 0.75 * np.mean(losses[:20]), (losses[:20], losses[-20:])


# The example cells with a PyTorch reference (tests/conformance/references.py):
# (example, reference, the cell's state names in the reference's order,
# whether the step returns an output besides its states).
sys.path.insert(0, str(REPO / "tests" / "conformance"))
import references  # noqa: E402

REFERENCES = [
    ("layernorm_lstm", lambda X, H: references.LayerNormLSTMCell(X, H), ("h", "c"), False),
    ("peephole_lstm", lambda X, H: references.PeepholeLSTMCell(X, H), ("h", "c"), False),
    ("layernorm_gru", lambda X, H: references.LayerNormGRUCell(X, H), ("h",), False),
    ("indrnn", lambda X, H: references.IndRNNCell(X, H), ("h",), False),
    ("hard_sigmoid_gru", lambda X, H: references.HardSigmoidGRUCell(X, H), ("h",), False),
    ("sru", lambda X, H: references.SRUCell(H), ("c",), True),
]


@pytest.mark.parametrize("name,make,states,own_output", REFERENCES, ids=[r[0] for r in REFERENCES])
def test_example_cells_match_autograd_through_their_references(name, make, states, own_output):
    """Each example cell with a PyTorch reference, with the reference's
    weights: outputs, final states and every gradient (the reference's
    tensors through the cell's bindings, the input, the initial states)
    against autograd through the reference stepped over the sequence."""
    torch.manual_seed(11)
    T, B, H = 6, 3, 8
    X = H if name == "sru" else 5
    ref = make(X, H)
    dims = {"H": H} if name == "sru" else {"X": X, "H": H}
    m = cellc.torch.Cell(EXAMPLES / f"{name}.rnn", dims=dims)
    m.load_checkpoint(ref.state_dict())
    x = torch.randn(T, B, X, requires_grad=True)
    h0 = [(0.5 * torch.randn(B, H)).requires_grad_() for _ in states]
    x2 = x.detach().clone().requires_grad_()
    h2 = [h.detach().clone().requires_grad_() for h in h0]
    state = tuple(h0) if len(states) > 1 else h0[0]
    ys = []
    for t in range(T):
        out = ref(x[t], state)
        if own_output:
            y, state = out
        else:
            state = out
            y = out[0] if len(states) > 1 else out
        ys.append(y)
    y_ref = torch.stack(ys)
    finals_ref = list(state) if len(states) > 1 else [state]
    y, finals = m(x2, dict(zip(states, h2)))
    close("y", y, y_ref)
    for s, f in zip(states, finals_ref):
        close(f"final {s}", finals[s], f)
    wy = torch.randn_like(y_ref)
    ws = [torch.randn(B, H) for _ in states]
    ((y_ref * wy).sum() + sum((f * w).sum() for f, w in zip(finals_ref, ws))).backward()
    ((y * wy).sum() + sum((finals[s] * w).sum() for s, w in zip(states, ws))).backward()
    close("dx", x2.grad, x.grad)
    for s, a, b in zip(states, h2, h0):
        close(f"d{s}0", a.grad, b.grad)
    want = m._cell.params_of({k: p.grad for k, p in ref.named_parameters()})
    for pname, w in zip(m.param_names, want):
        close(f"d{pname}", getattr(m, pname).grad, w)


NETWORKS = [
    (kind, layers, bidir, bias, batch_first, proj)
    for kind in ("LSTM", "GRU", "RNN", "RNN-relu")
    for layers, bidir in ((1, False), (2, False), (1, True), (2, True))
    for bias, batch_first in ((True, False), (False, True))
    for proj in ((0, 3) if kind == "LSTM" else (0,))
]


@pytest.mark.parametrize("kind,layers,bidir,bias,batch_first,proj", NETWORKS)
def test_from_torch_is_differentiable(kind, layers, bidir, bias, batch_first, proj):
    """`cellc.from_torch(module)` under autograd: the outputs, the final
    states and the gradients of the module's own parameters, the input and
    `hx` against PyTorch's on a copy of the module."""
    import copy
    torch.manual_seed(layers * 10 + bidir + 2 * bias + proj)
    X, H, T, B = 5, 6, 4, 3
    kw = dict(num_layers=layers, bidirectional=bidir, bias=bias, batch_first=batch_first)
    if kind == "LSTM":
        ref = torch.nn.LSTM(X, H, proj_size=proj, **kw)
    elif kind == "GRU":
        ref = torch.nn.GRU(X, H, **kw)
    else:
        ref = torch.nn.RNN(X, H, nonlinearity="relu" if kind == "RNN-relu" else "tanh", **kw)
    mod = copy.deepcopy(ref)
    net = cellc.from_torch(mod)
    D = 2 if bidir else 1
    out = proj or H
    x = torch.randn(B, T, X) if batch_first else torch.randn(T, B, X)
    x.requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    shapes = [(D * layers, B, out)] + ([(D * layers, B, H)] if kind == "LSTM" else [])
    hx = [torch.randn(*s, requires_grad=True) for s in shapes]
    hx2 = [h.detach().clone().requires_grad_() for h in hx]
    pack = (lambda h: tuple(h)) if kind == "LSTM" else (lambda h: h[0])
    y_ref, f_ref = ref(x, pack(hx))
    y, f = net(x2, pack(hx2))
    close("y", y, y_ref)
    f_ref = f_ref if isinstance(f_ref, tuple) else (f_ref,)
    f = f if isinstance(f, tuple) else (f,)
    w = [torch.randn_like(t) for t in f_ref]
    wy = torch.randn_like(y_ref)
    ((y_ref * wy).sum() + sum((a * b).sum() for a, b in zip(f_ref, w))).backward()
    ((y * wy).sum() + sum((a * b).sum() for a, b in zip(f, w))).backward()
    close("dx", x2.grad, x.grad)
    for a, b in zip(hx2, hx):
        close("dhx", a.grad, b.grad)
    for (name, p), (_, q) in zip(mod.named_parameters(), ref.named_parameters()):
        close(f"d{name}", p.grad, q.grad)


def test_from_torch_trains_in_place_of_the_module():
    """`model.rnn = cellc.from_torch(model.rnn)`: an optimizer over the
    model's parameters trains it; under no_grad the network runs the weights
    it was made with (as before)."""
    torch.manual_seed(5)
    rnn = torch.nn.GRU(3, 8)
    net = cellc.from_torch(rnn)
    opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
    x = torch.randn(6, 4, 3)
    before = rnn.weight_ih_l0.detach().clone()
    y, _ = net(x)
    y.pow(2).mean().backward()
    assert rnn.weight_ih_l0.grad is not None
    opt.step()
    assert not torch.equal(before, rnn.weight_ih_l0.detach())
    # In eval mode: the inference network, the weights it was made with.
    rnn.eval()
    y_eval, _ = net(x)
    assert not y_eval.requires_grad
    rnn.train()


@pytest.mark.parametrize("kind,layers,bidir", [("LSTM", 2, True), ("GRU", 1, True), ("RNN", 2, False),
                                               ("LSTM", 1, False)])
def test_packed_sequences_train(kind, layers, bidir):
    """Rows of different lengths (a PackedSequence, not sorted): the packed
    output, the final states and every gradient against autograd."""
    import copy
    from torch.nn.utils.rnn import pack_padded_sequence
    torch.manual_seed(11)
    X, H, T, B = 4, 5, 6, 4
    make = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}[kind]
    ref = make(X, H, num_layers=layers, bidirectional=bidir)
    mod = copy.deepcopy(ref)
    net = cellc.from_torch(mod)
    lengths = [3, 6, 1, 4]
    x = torch.randn(T, B, X, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    D = 2 if bidir else 1
    n_states = 2 if kind == "LSTM" else 1
    hx = [torch.randn(D * layers, B, H, requires_grad=True) for _ in range(n_states)]
    hx2 = [h.detach().clone().requires_grad_() for h in hx]
    pack = (lambda h: tuple(h)) if kind == "LSTM" else (lambda h: h[0])
    y_ref, f_ref = ref(pack_padded_sequence(x, lengths, enforce_sorted=False), pack(hx))
    y, f = net(pack_padded_sequence(x2, lengths, enforce_sorted=False), pack(hx2))
    assert torch.equal(y.batch_sizes, y_ref.batch_sizes)
    close("y", y.data, y_ref.data)
    f_ref = f_ref if isinstance(f_ref, tuple) else (f_ref,)
    f = f if isinstance(f, tuple) else (f,)
    for a, b in zip(f, f_ref):
        close("h_n", a, b)
    wy = torch.randn_like(y_ref.data)
    w = [torch.randn_like(t) for t in f_ref]
    ((y_ref.data * wy).sum() + sum((a * b).sum() for a, b in zip(f_ref, w))).backward()
    ((y.data * wy).sum() + sum((a * b).sum() for a, b in zip(f, w))).backward()
    close("dx", x2.grad, x.grad)
    for a, b in zip(hx2, hx):
        close("dhx", a.grad, b.grad)
    for (name, p), (_, q) in zip(mod.named_parameters(), ref.named_parameters()):
        close(f"d{name}", p.grad, q.grad)
