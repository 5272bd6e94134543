"""Sphinx configuration of the sksim documentation.

Build from the repository root (the ``docs`` extra installs what it needs)::

    python -m pip install ".[docs]"
    sphinx-build -W -b html docs docs/_build/html
    python docs/check_links.py docs/_build/html

The result and benchmark tables are generated from the committed JSON files
(``examples/results/``, ``benchmarks/results/``) at the start of every build
into ``docs/_generated/`` (see ``docs/_generate.py``); none is typed.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))

import _generate  # noqa: E402  (needs the docs folder on sys.path)

import sksim  # noqa: E402

_generate.write_all()

project = "sksim"
author = "the sksim developers"
copyright = "2026, the sksim developers"
release = sksim.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*.md", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_default_options = {"inherited-members": False}
# The class template documents the members (autodoc); numpydoc renders the
# sections of each docstring.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# The docs build offline (CI has no network): no intersphinx inventories are
# fetched, so references to numpy/scipy/sklearn/torch stay plain text.
intersphinx_mapping = {}
nitpicky = False

sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["auto_examples"],
    # The quick examples run at build time (about a minute the first time,
    # while numba compiles, then seconds); the experiments take minutes to
    # hours, so their pages show the code and link to the stored results.
    "filename_pattern": r"(quickstart|robust_fitting)\.py$",
    # Matched against file names: the helper modules are not examples.
    "ignore_pattern": r"^_|__init__\.py$",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_signature": False,
    "min_reported_time": 3600,
}

html_theme = "pydata_sphinx_theme"
html_title = f"sksim {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = []
html_show_sourcelink = False
