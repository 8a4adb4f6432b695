"""Shared helpers of the cellc Python tests: where the repository's reference
cases are, reading them as NumPy arrays, and the error measure the Rust
conformance tests use.

Tolerance (as tests/conformance.rs): max |cellc - reference| <= 1e-5 *
max |reference| per tensor. Both sides compute in float32 from the same
weights but sum in different orders; their rounding errors are a few 1e-7,
while a wrong gate order or a dropped bias moves values by 1e-2.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

REPO = Path(os.environ.get("CELLC_REPO") or Path(__file__).resolve().parents[2])
CASES = REPO / "tests" / "conformance" / "cases"
EXAMPLES = REPO / "examples"
TOLERANCE = 1e-5


def load(case: str, kind: str) -> dict:
    """A reference case's tensors (`weights`, `inputs` or `expected`)."""
    return load_file(str(CASES / f"{case}.{kind}.safetensors"))


def manifest(name: str) -> dict:
    return json.loads((CASES / name).read_text())


def rel_err(got, want) -> float:
    """The largest error of `got`, relative to `want`'s largest magnitude."""
    # Tensors that carry gradients (cellc.from_torch in grad mode) detached.
    got, want = (x.detach() if hasattr(x, "detach") else x for x in (got, want))
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    scale = max(np.abs(want).max(initial=0.0), 1e-30)
    return float(np.abs(got - want).max(initial=0.0) / scale)


def assert_close(got, want, what: str = ""):
    err = rel_err(got, want)
    assert err < TOLERANCE, f"{what}: relative error {err:.3e}"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
