"""The report as a list of blocks, rendered as Markdown or as one self-contained HTML page.

Text in blocks may contain `code spans` in backticks and nothing else of
Markdown. Both renderers turn them into code, so one text serves both formats.
A `Figure` carries its PNG bytes: Markdown links the file written beside
`report.md`, and HTML embeds the same bytes as a base64 `data:` URI, so the page
needs no other file and no server.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re


@dataclasses.dataclass(frozen=True)
class Heading:
    text: str
    level: int
    anchor: str | None = None


@dataclasses.dataclass(frozen=True)
class Paragraph:
    text: str


@dataclasses.dataclass(frozen=True)
class BulletList:
    items: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Code:
    """A command line, shown as a code block."""

    text: str


@dataclasses.dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    # Columns aligned right (numbers), by index.
    numeric: frozenset[int] = frozenset()


@dataclasses.dataclass(frozen=True)
class Figure:
    """A PNG figure: `file` is its name beside the report, `alt` its short description."""

    file: str
    png: bytes
    alt: str
    caption: str


@dataclasses.dataclass(frozen=True)
class Contents:
    """The table of contents: every level-2 heading with an anchor."""


Block = Heading | Paragraph | BulletList | Code | Table | Figure | Contents

_CODE_SPAN = re.compile(r"`([^`]+)`")


def _sections(blocks: list[Block]) -> list[Heading]:
    return [b for b in blocks if isinstance(b, Heading) and b.level == 2 and b.anchor]


# Markdown


def _markdown_cell(text: str) -> str:
    """Escape a table cell: "|" ends a cell, and "<" outside code spans starts raw HTML."""
    parts = []
    position = 0
    for match in _CODE_SPAN.finditer(text):
        parts.append(text[position:match.start()].replace("<", "&lt;"))
        parts.append(match.group(0))
        position = match.end()
    parts.append(text[position:].replace("<", "&lt;"))
    return "".join(parts).replace("|", "\\|").replace("\n", " ")


def _markdown_table(table: Table) -> str:
    separators = [
        "---:" if i in table.numeric else "---" for i in range(len(table.header))
    ]
    lines = [
        "| " + " | ".join(_markdown_cell(cell) for cell in table.header) + " |",
        "| " + " | ".join(separators) + " |",
    ]
    for row in table.rows:
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in row) + " |")
    return "\n".join(lines)


def render_markdown(blocks: list[Block], contents_title: str) -> str:
    """Render `blocks` as Markdown, with figures linked to their PNG files by name."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f'<a id="{block.anchor}"></a>\n' if block.anchor else ""
            parts.append(f"{anchor}{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, BulletList):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Code):
            parts.append(f"```bash\n{block.text}\n```")
        elif isinstance(block, Table):
            parts.append(_markdown_table(block))
        elif isinstance(block, Figure):
            parts.append(f"![{block.alt}]({block.file})\n\n*{block.caption}*")
        elif isinstance(block, Contents):
            items = [f"- [{h.text}](#{h.anchor})" for h in _sections(blocks)]
            parts.append(f"**{contents_title}**\n\n" + "\n".join(items))
    return "\n\n".join(parts) + "\n"


# HTML

STYLE = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #1f2328;
       line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: .85rem;
            background: #f6f8fa; border-radius: 4px; }
code { padding: .1rem .25rem; word-break: break-all; }
pre { padding: .6rem .8rem; overflow-x: auto; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { font-size: .9rem; color: #57606a; margin-top: .3rem; }
""".strip()


def _inline_html(text: str) -> str:
    """Escape `text` for HTML and turn its `code spans` into <code> elements."""
    parts = []
    position = 0
    for match in _CODE_SPAN.finditer(text):
        parts.append(html.escape(text[position:match.start()]))
        parts.append(f"<code>{html.escape(match.group(1))}</code>")
        position = match.end()
    parts.append(html.escape(text[position:]))
    return "".join(parts)


def _html_table(table: Table) -> str:
    header = "".join(f"<th>{_inline_html(cell)}</th>" for cell in table.header)
    rows = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            css = ' class="number"' if i in table.numeric else ""
            cells.append(f"<td{css}>{_inline_html(cell)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table>"
    )


def _html_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure>\n<img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(figure.alt)}">\n'
        f"<figcaption>{_inline_html(figure.caption)}</figcaption>\n</figure>"
    )


def render_html(blocks: list[Block], title: str, lang: str, contents_title: str) -> str:
    """Render `blocks` as one HTML page with inline CSS and embedded figures."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{block.anchor}"' if block.anchor else ""
            level = block.level
            parts.append(f"<h{level}{anchor}>{_inline_html(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, BulletList):
            items = "".join(f"<li>{_inline_html(item)}</li>" for item in block.items)
            parts.append(f"<ul>{items}</ul>")
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
        elif isinstance(block, Table):
            parts.append(_html_table(block))
        elif isinstance(block, Figure):
            parts.append(_html_figure(block))
        elif isinstance(block, Contents):
            items = "".join(
                f'<li><a href="#{h.anchor}">{_inline_html(h.text)}</a></li>'
                for h in _sections(blocks)
            )
            parts.append(
                f"<nav><p><strong>{html.escape(contents_title)}</strong></p>"
                f"<ul>{items}</ul></nav>"
            )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
