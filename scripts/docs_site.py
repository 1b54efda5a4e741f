#!/usr/bin/env python3
"""Pieces of the `make docs` site that no tool makes: the C header reference
(include/flowmesh.h, one entry per declaration with the comment above it),
text pages (go doc, the Node typings) as HTML, and the index page.

  docs_site.py header  HEADER OUT.html VERSION
  docs_site.py text    TITLE IN.txt OUT.html
  docs_site.py index   OUT_DIR VERSION   (links the parts found in OUT_DIR)
"""

import html
import re
import sys
from pathlib import Path

STYLE = """<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
pre{background:#f6f8fa;padding:.7rem;overflow-x:auto} code{font-size:.92em}
.decl{border-top:1px solid #ddd;padding-top:.6rem;margin-top:1rem} .toc{columns:3;font-size:.9em}
a{color:#0550ae}
</style>"""


def page(title: str, body: str) -> str:
    return f"<!doctype html>\n<html><head><meta charset=utf-8><title>{html.escape(title)}</title>{STYLE}</head><body>{body}</body></html>\n"


def header_reference(header: Path, out: Path, version: str) -> None:
    lines = header.read_text(encoding="utf-8").splitlines()
    entries = []  # (name, comment, declaration)
    comment: list = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("//"):
            comment.append(stripped[2:].strip())
            i += 1
            continue
        if stripped.startswith(('extern "C"', "}")):
            comment = []  # the C++ guard around the declarations
        elif stripped and not stripped.startswith(("#", "/*", "*")):
            # A declaration runs to the line ending in ';' (or a typedef's closing '} name;').
            decl = [line]
            depth = line.count("{") - line.count("}")
            while i + 1 < len(lines) and (depth > 0 or not decl[-1].rstrip().endswith(";")):
                i += 1
                decl.append(lines[i])
                depth += lines[i].count("{") - lines[i].count("}")
            text = "\n".join(decl)
            m = re.search(r"\b(fm_[a-z0-9_]+)\s*\(", text) or re.search(r"\}\s*(fm_[a-z0-9_]+)\s*;", text) \
                or re.search(r"typedef\s+.*?\b(fm_[a-z0-9_]+)\s*;", text, re.S) or re.search(r"\(\*(fm_[a-z0-9_]+)\)", text)
            if m and comment:
                entries.append((m.group(1), comment, text))
            comment = []
        elif not stripped:
            comment = []
        i += 1
    intro = re.search(r"/\*(.*?)\*/", header.read_text(encoding="utf-8"), re.S)
    body = [f"<h1>flowmesh.h {html.escape(version)}: the C ABI</h1>",
            "<p><a href='index.html'>&larr; all documentation</a></p>"]
    if intro:
        body.append("<pre>" + html.escape(re.sub(r"^\s*\* ?", "", intro.group(1), flags=re.M).strip()) + "</pre>")
    body.append("<div class=toc>" + "<br>".join(f"<a href='#{n}'>{n}</a>" for n, _, _ in entries) + "</div>")
    for name, com, decl in entries:
        body.append(f"<div class=decl id='{name}'><h3><code>{name}</code></h3><p>{html.escape(' '.join(com))}</p>"
                    f"<pre><code>{html.escape(decl)}</code></pre></div>")
    out.write_text(page(f"flowmesh.h {version}", "\n".join(body)), encoding="utf-8")
    print(f"docs: {len(entries)} declarations in {out}")


def text_page(title: str, src: Path, out: Path) -> None:
    out.write_text(page(title, f"<h1>{html.escape(title)}</h1><p><a href='index.html'>&larr; all documentation</a></p>"
                        f"<pre>{html.escape(src.read_text(encoding='utf-8'))}</pre>"), encoding="utf-8")


def index(out_dir: Path, version: str) -> None:
    parts = [
        ("rust/flowmesh/index.html", "Rust API", "the crate: Client, engines, the broker (rustdoc)"),
        ("c.html", "C ABI", "include/flowmesh.h: every function, its ownership, threads and statuses"),
        ("python/flowmesh.html", "Python", "the asyncio SDK (pdoc)"),
        ("go.html", "Go", "github.com/flowmesh/flowmesh/bindings/go (go doc -all)"),
        ("node.html", "Node", "index.d.ts: the TypeScript typings of the Node package"),
    ]
    items = []
    for href, name, what in parts:
        if (out_dir / href).is_file():
            items.append(f"<li><a href='{href}'>{name}</a>: {html.escape(what)}</li>")
        else:
            items.append(f"<li>{name}: not built ({html.escape(what)})</li>")
    body = (f"<h1>flowmesh {html.escape(version)} documentation</h1>"
            "<p>One messaging core (streams, queues, key-value, events) with a C ABI, and its bindings.</p>"
            f"<ul>{''.join(items)}</ul>")
    (out_dir / "index.html").write_text(page(f"flowmesh {version}", body), encoding="utf-8")


def main(argv: list) -> None:
    if argv[:1] == ["header"] and len(argv) == 4:
        header_reference(Path(argv[1]), Path(argv[2]), argv[3])
    elif argv[:1] == ["text"] and len(argv) == 4:
        text_page(argv[1], Path(argv[2]), Path(argv[3]))
    elif argv[:1] == ["index"] and len(argv) == 3:
        index(Path(argv[1]), argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
