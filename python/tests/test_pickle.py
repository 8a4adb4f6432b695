"""Compiled objects pickle (the source, sizes, options and weights;
unpickling compiles again) and so go to `multiprocessing` and
`concurrent.futures` workers, and come back with the same bits."""

import concurrent.futures
import multiprocessing
import pickle

import numpy as np
import pytest
import torch

import cellc
from conftest import CASES, EXAMPLES, load


def gru_kernel(rng, **options):
    w = {
        "weight_ih_l0": rng.standard_normal((3 * 12, 5)).astype(np.float32) * 0.3,
        "weight_hh_l0": rng.standard_normal((3 * 12, 12)).astype(np.float32) * 0.3,
        "bias_ih_l0": rng.standard_normal(3 * 12).astype(np.float32) * 0.1,
        "bias_hh_l0": rng.standard_normal(3 * 12).astype(np.float32) * 0.1,
    }
    return cellc.Cell(str(EXAMPLES / "gru.rnn"), dims={"X": 5, "H": 12}).compile(w, **options)


def run_kernel(k, xs):
    return k.run(xs, k.new_state(xs.shape[1]))


def run_network(net, x):
    # Inference, as a worker runs it: no gradients (in grad mode the network
    # is differentiable, and autograd's tensors do not cross processes).
    with torch.no_grad():
        return net(x)


def test_cells_pickle_with_their_source_and_sizes():
    cell = cellc.Cell(str(EXAMPLES / "layernorm_lstm.rnn"), dims={"X": 6, "H": 10})
    again = pickle.loads(pickle.dumps(cell))
    assert again.dims == cell.dims and again.name == cell.name
    assert again.ir(optimized=True) == cell.ir(optimized=True)


@pytest.mark.parametrize("options", [{}, {"precision": "bf16", "threads": 1, "plan": "hoisted"},
                                     {"optimize": False}, {"compute": "bf16", "plan": "gemm-hoisted"}])
def test_kernels_pickle_with_their_weights_and_options(rng, options):
    k = gru_kernel(rng, **options)
    again = pickle.loads(pickle.dumps(k))
    xs = rng.standard_normal((7, 3, 5)).astype(np.float32)
    assert np.array_equal(run_kernel(k, xs), run_kernel(again, xs))
    assert repr(again) == repr(k)


def test_networks_pickle():
    torch.manual_seed(0)
    for m in [torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True, proj_size=3),
              torch.nn.RNN(5, 7, nonlinearity="relu")]:
        net = cellc.from_torch(m, threads=1)
        again = pickle.loads(pickle.dumps(net))
        x = torch.randn(2, 4, 5) if m.batch_first else torch.randn(4, 2, 5)
        a, b = net(x), again(x)
        assert torch.equal(a[0], b[0])
        assert repr(again) == repr(net)


def test_onnx_networks_pickle():
    m = cellc.load_onnx(CASES / "onnxnet_gru_rev_lens.onnx")
    again = pickle.loads(pickle.dumps(m))
    inputs = load("onnxnet_gru_rev_lens", "inputs")
    a, b = m.run(inputs), again.run(inputs)
    for k in a:
        assert np.array_equal(a[k], b[k])


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_workers_give_the_same_bits(rng, method):
    k = gru_kernel(rng)
    batches = [rng.standard_normal((6, 2, 5)).astype(np.float32) for _ in range(4)]
    want = [run_kernel(k, xs) for xs in batches]
    with multiprocessing.get_context(method).Pool(2) as pool:
        got = pool.starmap(run_kernel, [(k, xs) for xs in batches])
    for a, b in zip(got, want):
        assert np.array_equal(a, b)


def test_a_process_pool_runs_a_network():
    torch.manual_seed(1)
    net = cellc.from_torch(torch.nn.LSTM(5, 9, num_layers=2))
    xs = [torch.randn(8, 3, 5) for _ in range(3)]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        got = list(ex.map(run_network, [net] * len(xs), xs))
    for x, (y, (h, c)) in zip(xs, got):
        wy, (wh, wc) = run_network(net, x)
        assert torch.equal(y, wy) and torch.equal(h, wh) and torch.equal(c, wc)
