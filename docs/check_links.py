"""Check every link inside the built documentation site.

Sphinx's ``linkcheck`` builder checks external links (it needs a network);
this checks the internal ones offline: every relative ``href``/``src`` in
every HTML page must name a file of the site, and every ``#fragment`` an
``id`` on the page it points to. External links (``http:``, ``https:``,
``mailto:``) are not followed.

    python docs/check_links.py docs/_build/html
"""

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

EXTERNAL = ("http", "https", "mailto", "data", "javascript")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(name):
                self.ids.add(attrs[name])
        for name in ("href", "src"):
            if attrs.get(name) and not (tag == "link" and attrs.get("rel") == "preload"):
                self.links.append(attrs[name])


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def broken_links(site):
    """``(page, link, why)`` for every internal link of ``site`` that is broken."""
    site = Path(site).resolve()
    # _static/ holds the theme's assets (some are templates, not pages).
    pages = {path: _parse(path) for path in site.rglob("*.html")
             if "_static" not in path.relative_to(site).parts}
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme in EXTERNAL or parts.netloc:
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append((path, link, "no such file"))
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append((path, link, "no such anchor"))
    return sorted((p.relative_to(site).as_posix(), link, why) for p, link, why in broken)


def main(argv):
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        sys.exit("usage: python docs/check_links.py <built html folder>")
    broken = broken_links(argv[0])
    for page, link, why in broken:
        print(f"{page}: {link} ({why})")
    print(f"{len(broken)} broken internal links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
