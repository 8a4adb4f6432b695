"""Block-circulant weights in PyTorch, for training a circulant cell there
and running it with cellc (the C-LSTM paper's compression: Wang et al.,
FPGA 2018).

A matrix of `k x k` circulant blocks is stored as `w` of shape `[R/k, C/k,
k]`: block `(i, j)` is the circulant matrix whose first column is
`w[i, j, :]`, `W[i*k + a, j*k + b] = w[i, j, (a - b) mod k]`, the
convention of cellc's `param W: circulant(k)[R, C]` (docs/language.md). A
module's state_dict holds the `w` tensors as they are, which cellc reads.

    from circulant import CirculantLSTMCell
    cell = CirculantLSTMCell(X=64, H=128, k=8)    # train it like any module
    safetensors.torch.save_file(cell.state_dict(), "clstm.safetensors")
"""

import torch


def circulant_dense(w: torch.Tensor) -> torch.Tensor:
    """The `[R, C]` matrix of the blocks' defining vectors `w` `[R/k, C/k,
    k]` (differentiable: gradients flow back to `w`)."""
    p, q, k = w.shape
    a = torch.arange(k, device=w.device)
    index = (a[:, None] - a[None, :]) % k  # [a, b] -> (a - b) mod k
    blocks = w[:, :, index]  # [p, q, k, k]: blocks[i, j, a, b]
    return blocks.permute(0, 2, 1, 3).reshape(p * k, q * k)


class CirculantLinear(torch.nn.Module):
    """`y = W x (+ b)` with `W` of `k x k` circulant blocks."""

    def __init__(self, inputs: int, outputs: int, k: int, bias: bool = True):
        super().__init__()
        if inputs % k or outputs % k:
            raise ValueError(f"blocks of {k} do not divide [{outputs}, {inputs}]")
        s = inputs ** -0.5
        self.weight = torch.nn.Parameter(torch.empty(outputs // k, inputs // k, k).uniform_(-s, s))
        self.bias = torch.nn.Parameter(torch.empty(outputs).uniform_(-s, s)) if bias else None

    def forward(self, x):
        y = x @ circulant_dense(self.weight).T
        return y if self.bias is None else y + self.bias


class CirculantLSTMCell(torch.nn.Module):
    """An LSTM step (gate order i, f, g, o) whose eight matrices are
    circulant, each gate's its own tensor: `weight_ih_i` `[H/k, X/k, k]`,
    `weight_hh_i` `[H/k, H/k, k]`, `bias_i` `[H]`, and so on. `CELL` is the
    same cell in cellc's language."""

    GATES = "ifgo"

    def __init__(self, X: int, H: int, k: int):
        super().__init__()
        for g in self.GATES:
            setattr(self, f"ih_{g}", CirculantLinear(X, H, k, bias=True))
            setattr(self, f"hh_{g}", CirculantLinear(H, H, k, bias=False))

    def forward(self, x, state):
        h, c = state
        pre = {g: getattr(self, f"ih_{g}")(x) + getattr(self, f"hh_{g}")(h) for g in self.GATES}
        i, f = torch.sigmoid(pre["i"]), torch.sigmoid(pre["f"])
        g, o = torch.tanh(pre["g"]), torch.sigmoid(pre["o"])
        c = f * c + i * g
        return o * torch.tanh(c), c

    @staticmethod
    def source(k: int) -> str:
        """The cell in cellc's language, reading this module's state_dict."""
        lines = ["cell circulant_lstm", "dim X", "dim H", "input x: [X]", "state h: [H], c: [H]", "output y: [H]"]
        for g in CirculantLSTMCell.GATES:
            lines.append(f"param W_{g}: circulant({k})[H, X] = ih_{g}.weight")
            lines.append(f"param U_{g}: circulant({k})[H, H] = hh_{g}.weight")
            lines.append(f"param b_{g}: [H] = ih_{g}.bias")
        lines += [
            "i = sigmoid(W_i @ x + U_i @ h + b_i)",
            "f = sigmoid(W_f @ x + U_f @ h + b_f)",
            "g = tanh(W_g @ x + U_g @ h + b_g)",
            "o = sigmoid(W_o @ x + U_o @ h + b_o)",
            "c' = f * c + i * g",
            "h' = o * tanh(c')",
            "y = h'",
        ]
        return "\n".join(lines) + "\n"
