"""The suite tests the installed package, and the package ships every module.

CI installs with ``pip install ".[test]"`` and runs ``pytest`` (the console
script, which puts ``tests/`` on the path, not the repository root), so
``import sksim`` resolves to the installed copy and a module left out of the
wheel fails here instead of passing against the source tree.
"""

import os
from pathlib import Path

import sksim

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "sksim"


def _modules(package_dir):
    return {path.relative_to(package_dir).as_posix()
            for path in package_dir.rglob("*.py") if "__pycache__" not in path.parts}


def test_installed_package_ships_every_source_module():
    installed = Path(sksim.__file__).resolve().parent
    if os.environ.get("CI"):
        assert installed != SOURCE, (
            f"CI imported sksim from the source tree ({installed}); run the README's "
            "test command so the installed package is tested")
    missing = _modules(SOURCE) - _modules(installed)
    assert not missing, f"modules missing from the installed package: {sorted(missing)}"


def test_sksim_works_without_torch_and_dask():
    """torch and dask are optional: with both unimportable, sksim imports,
    fits and predicts in memory, and neither is imported along the way."""
    import subprocess
    import sys

    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "dask", "distributed"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
import sksim
rng = np.random.default_rng(0)
X = rng.normal(size=(80, 4))
y = (X[:, 0] > 0).astype(int)
model = sksim.SIMClassifier(baseline=None).fit(X, y)
assert model.predict(X).shape == (80,)
assert not any(m.split(".")[0] in ("torch", "dask", "distributed") for m in sys.modules)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
