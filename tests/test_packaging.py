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
