"""Cells from the literature that no torch module implements, written in
PyTorch from their papers: the references of the examples of the same names
(`gen.py` writes their conformance cases; `python/tests/test_train.py`
checks cellc's gradients against autograd through them). Each is one step:
`module(x, state)`.
"""

import torch


def uniform(*shape, scale):
    return torch.nn.Parameter((torch.rand(*shape) * 2 - 1) * scale)


def layer_norms(module, names, H):
    # Gains and shifts away from PyTorch's 1 and 0, so that a swapped or
    # dropped one shows.
    for n in names:
        ln = torch.nn.LayerNorm(H, eps=1e-5)
        ln.weight.data = 1 + 0.3 * torch.randn(H)
        ln.bias.data = 0.3 * torch.randn(H)
        setattr(module, f"ln_{n}", ln)


class LayerNormLSTMCell(torch.nn.Module):
    # Ba, Kiros, Hinton 2016, as TensorFlow's LayerNormBasicLSTMCell: products
    # without bias, each gate normalised, forget bias 1, the new cell state
    # normalised. Gate order i, f, g, o.
    def __init__(self, X, H):
        super().__init__()
        s = H ** -0.5
        self.weight_ih = uniform(4 * H, X, scale=s)
        self.weight_hh = uniform(4 * H, H, scale=s)
        layer_norms(self, "ifgoc", H)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = (x @ self.weight_ih.T + h @ self.weight_hh.T).chunk(4, 1)
        i = torch.sigmoid(self.ln_i(i))
        f = torch.sigmoid(self.ln_f(f) + 1.0)
        g = torch.tanh(self.ln_g(g))
        o = torch.sigmoid(self.ln_o(o))
        c = self.ln_c(f * c + i * g)
        return o * torch.tanh(c), c


class LayerNormGRUCell(torch.nn.Module):
    # nn.GRU with each gate's pre-activation normalised; gate order r, z, n.
    def __init__(self, X, H):
        super().__init__()
        s = H ** -0.5
        self.weight_ih = uniform(3 * H, X, scale=s)
        self.weight_hh = uniform(3 * H, H, scale=s)
        self.bias_hn = uniform(H, scale=s)
        layer_norms(self, "rzn", H)

    def forward(self, x, h):
        xr, xz, xn = (x @ self.weight_ih.T).chunk(3, 1)
        hr, hz, hn = (h @ self.weight_hh.T).chunk(3, 1)
        r = torch.sigmoid(self.ln_r(xr + hr))
        z = torch.sigmoid(self.ln_z(xz + hz))
        n = torch.tanh(self.ln_n(xn + r * (hn + self.bias_hn)))
        return (1 - z) * n + z * h


class PeepholeLSTMCell(torch.nn.Module):
    # Gers, Schraudolph, Schmidhuber 2002 (ONNX LSTM with P); gate order i, f, g, o.
    def __init__(self, X, H):
        super().__init__()
        s = H ** -0.5
        self.weight_ih = uniform(4 * H, X, scale=s)
        self.weight_hh = uniform(4 * H, H, scale=s)
        self.bias = uniform(4 * H, scale=s)
        self.weight_ic = uniform(H, scale=s)
        self.weight_fc = uniform(H, scale=s)
        self.weight_oc = uniform(H, scale=s)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = (x @ self.weight_ih.T + h @ self.weight_hh.T + self.bias).chunk(4, 1)
        i = torch.sigmoid(i + self.weight_ic * c)
        f = torch.sigmoid(f + self.weight_fc * c)
        c = f * c + i * torch.tanh(g)
        o = torch.sigmoid(o + self.weight_oc * c)
        return o * torch.tanh(c), c


class IndRNNCell(torch.nn.Module):
    # Li et al. 2018: h' = relu(W x + u * h + b).
    def __init__(self, X, H):
        super().__init__()
        s = H ** -0.5
        self.weight_ih = uniform(H, X, scale=s)
        self.weight_hh = uniform(H, scale=1.0)
        self.bias = uniform(H, scale=s)

    def forward(self, x, h):
        return torch.relu(x @ self.weight_ih.T + self.weight_hh * h + self.bias)


class SRUCell(torch.nn.Module):
    # Lei et al. 2018, equations 3-7; the input is as wide as the state.
    def __init__(self, H):
        super().__init__()
        s = H ** -0.5
        self.weight = uniform(3 * H, H, scale=s)
        self.v_f = uniform(H, scale=s)
        self.v_r = uniform(H, scale=s)
        self.b_f = uniform(H, scale=s)
        self.b_r = uniform(H, scale=s)

    def forward(self, x, c):
        xt, xf, xr = (x @ self.weight.T).chunk(3, 1)
        f = torch.sigmoid(xf + self.v_f * c + self.b_f)
        r = torch.sigmoid(xr + self.v_r * c + self.b_r)
        c = f * c + (1 - f) * xt
        return r * c + (1 - r) * x, c


def keras_hard_sigmoid(x):
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class HardSigmoidGRUCell(torch.nn.Module):
    # Keras 2's GRU (reset_after=False, recurrent_activation="hard_sigmoid");
    # gate order z, r, h.
    def __init__(self, X, H):
        super().__init__()
        s = H ** -0.5
        self.weight_ih = uniform(3 * H, X, scale=s)
        self.weight_hh = uniform(3 * H, H, scale=s)
        self.bias = uniform(3 * H, scale=s)
        self.H = H

    def forward(self, x, h):
        H = self.H
        wx = x @ self.weight_ih.T + self.bias
        u = self.weight_hh
        z = keras_hard_sigmoid(wx[:, :H] + h @ u[:H].T)
        r = keras_hard_sigmoid(wx[:, H:2 * H] + h @ u[H:2 * H].T)
        n = torch.tanh(wx[:, 2 * H:] + (r * h) @ u[2 * H:].T)
        return z * h + (1 - z) * n
