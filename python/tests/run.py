#!/usr/bin/env python3
"""Builds the `cellc` Python package and runs its tests (python/tests).

Two virtual environments, made once and reused while their requirements file
is unchanged (under $CELLC_PYENV, else $XDG_CACHE_HOME/cellc, else
~/.cache/cellc): one with PyTorch, ONNX, ONNX Runtime and Ray
(requirements.txt: about 3 GB on the first run, PyTorch's CUDA libraries
included), one with NumPy alone (numpy-only.txt), where the tests that must
pass without torch run. The package is built once with maturin (a release
build of the extension) and installed in both.

Usage: python3 python/tests/run.py [pytest arguments]
"""

import hashlib
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
ROOT = PACKAGE.parent


def cache_root() -> Path:
    if os.environ.get("CELLC_PYENV"):
        return Path(os.environ["CELLC_PYENV"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cellc"


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def bootstrap_pip(python: Path, cache: Path) -> None:
    """pip in a virtual environment made without it: where Python's own
    `ensurepip` is missing (Debian's python3 without python3-venv), the pip
    wheel from PyPI, run from the wheel itself."""
    index = "https://pypi.org/pypi/pip/json"
    with urllib.request.urlopen(index, timeout=60) as r:
        release = json.load(r)
    url = next(u["url"] for u in release["urls"] if u["filename"].endswith(".whl"))
    url = urllib.parse.urljoin(index, url)  # mirrors give relative addresses
    wheel = cache / url.rsplit("/", 1)[1]
    if not wheel.exists():
        print(f"downloading {url}", flush=True)
        with urllib.request.urlopen(url, timeout=300) as r:
            wheel.write_bytes(r.read())
    run([python, wheel / "pip", "install", "-q", wheel])


def environment(requirements: Path) -> Path:
    """A virtual environment with `requirements`, made if missing or stale."""
    text = requirements.read_bytes() + sys.version.encode()
    key = hashlib.sha256(text).hexdigest()[:12]
    env = cache_root() / f"pyenv-{requirements.stem}-{key}"
    python = env / "bin" / "python"
    done = env / ".complete"
    if not done.exists():
        print(f"making the test environment {env} (once; reused while {requirements.name} is unchanged)", flush=True)
        try:
            import ensurepip  # noqa: F401
            with_pip = True
        except ImportError:
            with_pip = False
        venv.EnvBuilder(with_pip=with_pip, clear=True).create(env)
        if not with_pip:
            bootstrap_pip(python, cache_root())
        run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        run([python, "-m", "pip", "install", "-q", "-r", requirements])
        done.write_text(key)
    return python


def main() -> int:
    full = environment(HERE / "requirements.txt")
    bare = environment(HERE / "numpy-only.txt")
    wheels = ROOT / "target" / "wheels"
    for old in wheels.glob("cellc-*.whl") if wheels.exists() else []:
        old.unlink()
    run([full, "-m", "maturin", "build", "--release", "-q", "-m", PACKAGE / "Cargo.toml",
         "-o", wheels, "-i", full])
    wheel = next(wheels.glob("cellc-*.whl"))
    for python in (full, bare):
        run([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", wheel])
    env = dict(os.environ, CELLC_REPO=str(ROOT))
    args = sys.argv[1:]
    # Without torch: the NumPy-only module, where `import torch` must fail.
    run([bare, "-m", "pytest", "-q", HERE / "test_numpy_only.py", *args], cwd=ROOT,
        env=dict(env, CELLC_EXPECT_NO_TORCH="1"))
    run([full, "-m", "pytest", "-q", HERE, *args], cwd=ROOT, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
