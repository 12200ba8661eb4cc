"""numba's on-disk cache lives in a folder named by a hash of the package's sources (simscale_env/__init__.py):
numba itself notices a change of a kernel's own file only, not of a kernel it calls from another module."""

import json
import os
import subprocess
import sys
from pathlib import Path

import simscale_env
from simscale_env import _source_digest


def test_the_source_digest_changes_with_any_source_file_and_only_then(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "metrics").mkdir(parents=True)
    (pkg / "metrics" / "geometry.py").write_text("def f():\n    return 1\n")
    (pkg / "metrics" / "epdms.py").write_text("from .geometry import f\n")
    (pkg / "notes.txt").write_text("not a source")
    first = _source_digest(str(pkg))
    assert _source_digest(str(pkg)) == first
    (pkg / "notes.txt").write_text("still not a source")
    assert _source_digest(str(pkg)) == first
    (pkg / "metrics" / "geometry.py").write_text("def f():\n    return 2\n")  # a callee in another module
    changed = _source_digest(str(pkg))
    assert changed != first
    (pkg / "metrics" / "geometry.py").write_text("def f():\n    return 1\n")
    assert _source_digest(str(pkg)) == first  # switching back finds the earlier compilation
    (pkg / "metrics" / "geometry.py").rename(pkg / "metrics" / "geometry2.py")
    assert _source_digest(str(pkg)) != first  # paths count too


def test_kernels_are_cached_under_the_digest_of_the_sources(tmp_path):
    code = "import json, numba, simscale_env; print(json.dumps(numba.config.CACHE_DIR))"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    want = tmp_path / ("simscale-" + _source_digest(os.path.dirname(simscale_env.__file__)))
    assert Path(json.loads(r.stdout.strip().splitlines()[-1])) == want


def test_old_cache_folders_are_pruned_but_recent_and_current_ones_kept(tmp_path):
    import time

    from simscale_env import _numba_cache_folder

    old = time.time() - 3 * 86400
    for k in range(12):
        d = tmp_path / f"simscale-{k:016x}"
        d.mkdir()
        os.utime(d, (old + k, old + k))
    (tmp_path / "simscale-recent").mkdir()  # used within the day: kept whatever its rank
    (tmp_path / "metrics_0123").mkdir()  # not ours
    current = _numba_cache_folder(str(tmp_path), keep=8)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert Path(current).name in left and "simscale-recent" in left and "metrics_0123" in left
    # current + the 7 most recent others (simscale-recent and the 6 newest old ones)
    made = {f"simscale-{k:016x}" for k in range(12)}
    assert [n for n in left if n in made] == [f"simscale-{k:016x}" for k in range(6, 12)]
