"""`simscale_env.parallel.set_worker_threads`: a worker's thread limit must not break numba's later compilations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys
{pre}
from simscale_env.parallel import set_worker_threads
set_worker_threads(1)
import numba
import numpy as np

@numba.njit(parallel=True, cache=False)
def total(a):  # compiled after the limit (a cold cache: every function of a fresh machine)
    s = 0.0
    for i in numba.prange(a.shape[0]):
        s += a[i]
    return s

assert total(np.ones(1000)) == 1000.0
assert numba.get_num_threads() == 1, numba.get_num_threads()
print("ok", os.environ.get("NUMBA_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS"))
"""


def _run(pre: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run([sys.executable, "-c", SCRIPT.format(pre=pre)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.split()


def test_a_worker_that_imported_numba_before_compiles_after_the_limit():
    """numba imported (and its threads started) before the limit, as in a spawned worker of the data engine: the
    limit masks the threads and leaves NUMBA_NUM_THREADS alone (numba refuses a changed value at its next compile:
    'Cannot set NUMBA_NUM_THREADS to a different value once the threads have been launched')."""
    out = _run("import numba, numpy as np\nnumba.njit(parallel=True)(lambda a: a.sum())(np.ones(3))")
    assert out == ["ok", "None", "1"]


def test_a_fresh_worker_compiles_after_the_limit():
    """A fresh process (what `set_worker_threads` sees first in a spawned worker): one thread, compilations work."""
    out = _run("")
    assert out[0] == "ok" and out[2] == "1"
