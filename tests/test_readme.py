"""The README's Python examples run as written, in order, in one namespace (later blocks use `sim`, `w`, `sc` from
earlier ones), from a folder whose `.cache/mini` is the mini dataset."""

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(mini, tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 6
    (tmp_path / ".cache").mkdir()
    os.symlink(mini, tmp_path / ".cache" / "mini")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMSCALE_MINI", str(mini))
    ns: dict = {}
    for k, code in enumerate(blocks):
        try:
            exec(compile(code, f"README.md python block {k + 1}", "exec"), ns)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"README python block {k + 1} failed: {exc!r}\n{code}") from exc
    out = capsys.readouterr().out
    assert "(3, 224, 480, 3)" in out  # the quick start's camera observation shape, as the README prints it
    assert "ep_epdms_mean" in out  # the PPO recipe logs the episode EPDMS (SB3's table)
