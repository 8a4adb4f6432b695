"""Batch inference with Ray Data (docs/python.md, "Beyond one machine"): a
network compiled once, shipped to Ray's workers by pickling, run over a
dataset of sequences with `map_batches` on a local Ray instance; the
results are the same bits as running it here."""

from pathlib import Path

import numpy as np
import pytest
import ray
import torch

import cellc


class Predict:
    """One per Ray worker: holds the network (unpickled, so compiled, once
    per worker) and runs each batch of sequences."""

    def __init__(self, net):
        self.net = net

    def __call__(self, batch: dict) -> dict:
        y, (h, c) = self.net(batch["x"])  # [B, T, X] with batch_first=True
        return {"id": batch["id"], "y": y, "h": np.ascontiguousarray(h.transpose(1, 0, 2))}


@pytest.fixture(scope="module")
def local_ray():
    # The workers import `Predict` from this file: put its folder on their path.
    here = str(Path(__file__).resolve().parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": here}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_map_batches_over_a_dataset_of_sequences(local_ray):
    torch.manual_seed(0)
    module = torch.nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
    net = cellc.from_torch(module, threads=1)
    rng = np.random.default_rng(0)
    rows = [{"id": i, "x": rng.standard_normal((12, 16)).astype(np.float32)} for i in range(40)]
    ds = ray.data.from_items(rows)
    out = ds.map_batches(Predict, fn_constructor_kwargs={"net": net}, batch_size=8,
                         concurrency=2, batch_format="numpy").take_all()
    assert len(out) == 40
    by_id = {int(r["id"]): r for r in out}
    x = np.stack([r["x"] for r in rows])
    y, (h, _) = net(x)
    with torch.no_grad():
        ty, _ = module(torch.from_numpy(x))
    for i in range(40):
        assert np.array_equal(by_id[i]["y"], y[i]), f"row {i}"
        assert np.array_equal(by_id[i]["h"], h[:, i]), f"row {i}"
    assert np.abs(y - ty.numpy()).max() < 1e-5 * np.abs(ty.numpy()).max()
