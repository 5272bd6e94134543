"""The documentation's generated parts: internal link checking and the
README's headline tables (generated from the committed JSON results, never
typed; CI builds the whole site with warnings as errors)."""

import importlib.util
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check_links():
    return _load("check_links")


def _page(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}</body></html>")


def test_check_links_reports_missing_files_and_anchors(tmp_path, check_links):
    _page(tmp_path / "index.html",
          '<a href="guide/page.html#usage">ok</a> <a href="guide/page.html#nowhere">anchor</a>'
          ' <a href="missing.html">file</a> <a href="#top">self</a> <span id="top"></span>'
          ' <img src="_images/figure.png"> <a href="https://example.org/x.html">external</a>'
          ' <a href="guide/">folder</a>')
    _page(tmp_path / "guide" / "page.html", '<h2 id="usage">Usage</h2>')
    _page(tmp_path / "guide" / "index.html", '<a href="../index.html#top">back</a>')
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "figure.png").write_bytes(b"")

    broken = check_links.broken_links(tmp_path)

    assert broken == [("index.html", "guide/page.html#nowhere", "no such anchor"),
                      ("index.html", "missing.html", "no such file")]
    assert check_links.main([str(tmp_path)]) == 1
    _page(tmp_path / "index.html", '<a href="guide/page.html#usage">ok</a> <p id="top"></p>')
    assert check_links.main([str(tmp_path)]) == 0


def test_readme_headline_tables_are_generated_from_the_results():
    generate = _load("_generate")
    readme = generate.README.read_text()
    start, end = (readme.index(marker) for marker in generate.HEADLINE_MARKERS)
    in_readme = readme[start + len(generate.HEADLINE_MARKERS[0]):end].strip()
    assert in_readme == generate.headline().strip(), (
        "the README's headline tables differ from the results; run "
        "python docs/_generate.py --readme")
    assert "| Fashion-MNIST, MLP |" in in_readme


@pytest.mark.parametrize("script", ["state_scaling.py", "cifar100_teacher.py",
                                    "defaults_protocol.py"])
def test_example_scripts_end_a_missing_data_run_with_the_message(script, tmp_path):
    """A command-line script without its data prints the loader's message and
    exits with status 2, no traceback."""
    import subprocess
    import sys

    if script.startswith(("cifar100", "defaults")):
        pytest.importorskip("torch")
    examples = DOCS.parent / "examples"
    run = subprocess.run([sys.executable, str(examples / script), "--data-home",
                          str(tmp_path), "--output-dir", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert str(tmp_path) in run.stderr and script in run.stderr
