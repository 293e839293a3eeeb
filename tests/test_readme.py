"""The README's Python example runs as written (one epoch instead of 20)."""

import os
import re

import numpy as np

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", open(README).read(), flags=re.S)


def test_model_fit_example_runs(tmp_path, monkeypatch):
    (example,) = [block for block in _python_blocks() if "ARAdaLSModel(backbone" in block]
    assert "epochs=20" in example
    monkeypatch.chdir(tmp_path)
    from aradals_tf import data

    images = data.load_arrays("mnist5k", "test")[0][:8]
    namespace = {"images": images}
    exec(compile(example.replace("epochs=20", "epochs=1"), "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (8, 10)
    assert np.all(np.asarray(namespace["model"].stratum_eps) >= 0)
    assert "stratum0_eps" in open(tmp_path / "log.csv").readline()
