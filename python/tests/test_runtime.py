"""How compiled objects behave at run time: arrays read in place (asserted
with `cellc.copies()`), the GIL released during compiled calls, one kernel
shared by several Python threads with the same bits, and no memory growth
over 100,000 steps."""

import threading
import time

import numpy as np
import pytest
import torch

import cellc
from conftest import EXAMPLES


def lstm(rng, X, H, **options):
    s = 1 / np.sqrt(H)
    w = {
        "weight_ih_l0": rng.uniform(-s, s, (4 * H, X)).astype(np.float32),
        "weight_hh_l0": rng.uniform(-s, s, (4 * H, H)).astype(np.float32),
        "bias_ih_l0": rng.uniform(-s, s, 4 * H).astype(np.float32),
        "bias_hh_l0": rng.uniform(-s, s, 4 * H).astype(np.float32),
    }
    return cellc.Cell(str(EXAMPLES / "lstm.rnn"), dims={"X": X, "H": H}).compile(w, **options)


def test_float32_contiguous_arrays_are_read_in_place(rng):
    k = lstm(rng, 8, 16)
    state = k.new_state(3)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    xs = rng.standard_normal((5, 3, 8)).astype(np.float32)
    h = np.zeros((3, 16), np.float32)
    frozen = xs.copy()
    frozen.flags.writeable = False
    before = cellc.copies()
    k.step(x, state)
    k.run(xs, state)
    k.run(frozen, state)
    state.set("h", h)
    k.step(torch.from_numpy(x), state)  # a float32 CPU tensor shares its memory
    k.run(torch.from_numpy(xs), state)
    assert cellc.copies() == before
    # Anything else is converted, once per argument.
    k.step(x.astype(np.float64), state)
    assert cellc.copies() == before + 1
    k.run(np.asfortranarray(xs), state)
    assert cellc.copies() == before + 2
    k.run(xs[:, :, ::-1], state)  # negative strides
    assert cellc.copies() == before + 3
    k.step(torch.from_numpy(x).to(torch.float16), state)
    assert cellc.copies() == before + 4
    k.step(torch.from_numpy(np.ascontiguousarray(x.T)).T, state)  # [3, 8], column-major
    assert cellc.copies() == before + 5


def test_a_network_reads_time_major_float32_in_place():
    m = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    net = cellc.from_torch(m)
    x = torch.randn(6, 3, 8)
    hx = (torch.zeros(4, 3, 16), torch.zeros(4, 3, 16))
    before = cellc.copies()
    net(x, hx)
    net(x.numpy(), (hx[0].numpy(), hx[1].numpy()))
    assert cellc.copies() == before


def test_outputs_are_new_float32_arrays_the_caller_owns(rng):
    k = lstm(rng, 4, 8)
    state = k.new_state(2)
    xs = rng.standard_normal((3, 2, 4)).astype(np.float32)
    ys = k.run(xs, state)
    assert ys.dtype == np.float32 and ys.flags.c_contiguous and ys.flags.writeable
    ys[:] = 0  # the caller's: writing it changes nothing in cellc
    h = state.get("h")
    h[:] = 7
    assert not np.array_equal(state.get("h"), h)


def test_the_gil_is_released_while_compiled_code_runs(rng):
    """While one thread is inside a long `run`, another runs Python: with
    the GIL held it could not (the call never yields it)."""
    k = lstm(rng, 256, 256, threads=1)
    xs = rng.standard_normal((1500, 8, 256)).astype(np.float32)
    state = k.new_state(8)
    window = {}

    def worker():
        window["start"] = time.perf_counter()
        k.run(xs, state)
        window["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    ticks = []
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
    t.join()
    duration = window["end"] - window["start"]
    inside = [s for s in ticks if window["start"] < s < window["end"]]
    assert duration > 0.05, f"the call took {duration * 1e3:.1f} ms: too short to tell"
    # Released: the main thread ticks all along (hundreds of thousands of
    # times); held: at most a switch interval's worth at the edges.
    assert len(inside) > 1000, f"{len(inside)} ticks in a {duration * 1e3:.0f} ms call"


@pytest.mark.parametrize("threads", [1, 2])
def test_four_python_threads_share_one_kernel_with_the_same_bits(rng, threads):
    k = lstm(rng, 32, 64, threads=threads)
    xs = rng.standard_normal((40, 5, 32)).astype(np.float32)

    def one():
        state = k.new_state(5)
        ys = k.run(xs, state)
        for x in xs[:10]:
            k.step(x, state)
        return ys, k.output(state, "y"), state.get("c")

    want = one()
    results = [None] * 4
    barrier = threading.Barrier(4)

    def worker(i):
        barrier.wait()
        for _ in range(5):
            got = one()
            if results[i] is None:
                results[i] = got
            for a, b in zip(got, want):
                assert np.array_equal(a, b), f"thread {i}"
            results[i] = got

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i, r in enumerate(results):
        assert r is not None, f"thread {i} failed"
        for a, b in zip(r, want):
            assert np.array_equal(a, b)


def test_four_python_threads_share_one_network():
    torch.manual_seed(0)
    m = torch.nn.GRU(16, 32, num_layers=2, bidirectional=True)
    net = cellc.from_torch(m)
    x = torch.randn(30, 4, 16)
    want = net(x)
    outs = [None] * 4

    def worker(i):
        outs[i] = [net(x) for _ in range(3)]

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for runs in outs:
        for y, h in runs:
            assert torch.equal(y, want[0]) and torch.equal(h, want[1])


def test_a_state_used_by_two_threads_at_once_is_an_error_not_a_crash(rng):
    k = lstm(rng, 128, 128, threads=1)
    state = k.new_state(4)
    xs = rng.standard_normal((3000, 4, 128)).astype(np.float32)
    errors = []

    def worker():
        try:
            k.run(xs, state)
        except Exception as e:  # noqa: BLE001 - the kind is what is checked
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    # Either both ran one after the other or the second was refused (the
    # state is borrowed): never two writers at once.
    for e in errors:
        assert isinstance(e, RuntimeError) and "borrow" in str(e), repr(e)
    assert state.steps == 3000 * (2 - len(errors))


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_no_memory_growth_over_100000_steps(rng):
    k = lstm(rng, 128, 128)
    state = k.new_state(1)
    x = rng.standard_normal((1, 128)).astype(np.float32)
    xt = torch.from_numpy(x)
    for _ in range(5000):  # warm: allocator pools, first-touch pages
        k.step(x, state)
        k.output(state, "y")
    before = rss_kib()
    for i in range(100_000):
        k.step(xt if i % 2 else x, state)
        if i % 10 == 0:
            k.output(state, "y")
    grown = rss_kib() - before
    # A leak of even 16 bytes a step would be 1.6 MB.
    assert grown < 1024, f"RSS grew by {grown} KiB over 100,000 steps"
    assert state.steps == 105_000


def test_tensors_read_in_place_give_the_values_numpy_gives(rng):
    """The tensor fast path reads the tensor's own memory: an offset view, a
    parameter that requires grad, a lazily negated view (resolved, and so
    converted) all give exactly what the same values as NumPy give."""
    k = lstm(rng, 8, 16)
    base = rng.standard_normal((5, 8)).astype(np.float32)

    def y_of(x):
        state = k.new_state(3)
        k.step(x, state)
        out = k.output(state, "y")
        return out.numpy() if isinstance(out, torch.Tensor) else out

    want = y_of(base[2:])
    t = torch.from_numpy(base)
    before = cellc.copies()
    assert np.array_equal(y_of(t[2:]), want)  # storage offset, contiguous
    assert np.array_equal(y_of(torch.nn.Parameter(t[2:].clone())), want)
    assert cellc.copies() == before
    assert np.array_equal(y_of(torch._neg_view(-t[2:])), want)
    assert cellc.copies() == before + 1
    assert np.array_equal(y_of(t.double()[2:]), want)
    assert cellc.copies() == before + 2
    empty = k.new_state(1)
    with pytest.raises(cellc.ShapeError):
        k.step(torch.zeros(0, 8), empty)
