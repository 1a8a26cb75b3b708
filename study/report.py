"""Write the study report as Markdown with PNG figures and as one self-contained HTML page.

    python -m study.report [--results-dir results] [--out DIR] [--lang en|de] [-v]

The report reads the tidy tables of the results folder (rebuilding them when a
trial record is newer), each project's `study_config.json`, `runs.jsonl` and
the best trials' `predictions.npz`. It writes into `--out`:

- `report.md` with the figures as PNG files beside it, linked by name;
- `report.html`, the same content with the figures embedded as base64 data
  URIs and inline CSS, so it opens in a browser without a server or network.

The output contains no timestamps, so the same results give byte-identical files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from study import cli, figures, report_sections
from study.errors import ConfigError
from study.report_data import load_results
from study.report_document import Block, Contents, Figure, render_html, render_markdown
from study.report_text import LANGUAGES, Language, language

logger = logging.getLogger("study.report")

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
DEFAULT_OUT = {"en": "report", "de": "report_de"}


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m study.report",
        description=(
            "Write the study report (report.md with PNG figures, and a self-contained "
            "report.html) from the trial records of a results folder."
        ),
    )
    parser.add_argument(
        "--results-dir", default="results", metavar="DIR",
        help="results folder written by python -m study.search (default: results)",
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR",
        help="output folder (default: RESULTS_DIR/report, or RESULTS_DIR/report_de "
        "with --lang de)",
    )
    parser.add_argument(
        "--lang", choices=sorted(LANGUAGES), default="en",
        help="language of titles, labels and text (default: en)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def build_blocks(results, text: Language) -> list[Block]:
    """Assemble every section of the report, rendering its figures."""
    blocks: list[Block] = report_sections.introduction(results, text)
    blocks.append(Contents())
    with figures.style():
        for section in (
            report_sections.baseline,
            report_sections.learning_curves,
            report_sections.overfitting,
            report_sections.predictions,
            report_sections.hyperparameters,
            report_sections.provenance,
        ):
            blocks += section(results, text)
    return blocks


def _write(path: Path, content: bytes) -> None:
    try:
        path.write_bytes(content)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path} ({exc.strerror}); pass another --out"
        ) from exc
    logger.info("wrote %s", path)


def write_report(blocks: list[Block], out_dir: Path, text: Language) -> list[Path]:
    """Write the figures, report.md and report.html into `out_dir` and return their paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output folder {out_dir} ({exc.strerror or exc}); "
            "pass another --out"
        ) from exc

    written = []
    for block in blocks:
        if isinstance(block, Figure):
            _write(out_dir / block.file, block.png)
            written.append(out_dir / block.file)
    contents = text("contents")
    markdown = render_markdown(blocks, contents)
    page = render_html(blocks, text("title"), text.code, contents)
    for name, document in ((MARKDOWN_FILE, markdown), (HTML_FILE, page)):
        _write(out_dir / name, document.encode("utf-8"))
        written.append(out_dir / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    results_dir = Path(args.results_dir)
    out_dir = Path(args.out) if args.out else results_dir / DEFAULT_OUT[args.lang]
    text = language(args.lang)

    results = load_results(results_dir)
    logger.info(
        "read %d trials and %d epochs from %s", len(results.trials), len(results.epochs),
        results_dir,
    )
    write_report(build_blocks(results, text), out_dir, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_main(main))
