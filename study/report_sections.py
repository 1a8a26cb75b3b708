"""The sections of the report, each built as a list of blocks from the loaded results.

Every function takes the `Results` and the `Language` and returns blocks for
`study.report_document`. Figures are rendered to PNG bytes here, inside
`figures.style()`, which the caller enters once for the whole report.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd

from study import figures
from study.data import CLASS_NAMES
from study.report_data import PREDICTIONS_FILE, Results, best_trials, read_predictions
from study.report_document import Block, BulletList, Code, Figure, Heading, Paragraph, Table
from study.report_text import MISSING, Language, is_number

BASELINE = "baseline"
# Figures the original notebooks reported for the baseline setup, per training-set
# size. Missing keys are figures they do not give.
ORIGINAL_NOTEBOOKS = {
    10000: {
        "head_final_train_accuracy": 0.37,
        "head_test_accuracy": 0.36,
        "final_train_accuracy": 0.97,
        "finetune_test_accuracy": 0.267,
    },
    50000: {"finetune_test_accuracy": 0.663},
}
BASELINE_MEASURES = (
    ("head_final_train_accuracy", "measure_head_train"),
    ("head_test_accuracy", "measure_head_test"),
    ("final_train_accuracy", "measure_final_train"),
    ("finetune_test_accuracy", "measure_final_test"),
)
STANDARD_SIZES = (1000, 2500, 5000, 10000, 25000, 50000)
# Hex digits of a sha256 shown in tables. Provenance lists the full digests.
SHORT_HASH = 12
HYPERPARAMETER_PREFIX = "hp_"


def _slug(name: str) -> str:
    """Make `name` safe as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _value(row, column):
    """Return `row[column]`, or None when the column is missing or the cell is empty."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def _short_hash(value) -> str:
    return f"`{value[:SHORT_HASH]}…`" if isinstance(value, str) and value else MISSING


def _status_counts(results: Results, space: str, size: int, text: Language) -> str:
    """Describe the trials recorded so far at one size, or "" when there are none."""
    trials = results.trials
    chosen = trials[(trials["search_space"] == space) & (trials["size"] == size)]
    if chosen.empty:
        return ""
    counts = Counter(chosen["status"])
    listed = ", ".join(f"{counts[s]} {text.status(s)}" for s in sorted(counts))
    return text("status_counts", counts=listed)


# Options of `python -m study.search` that change a project's fingerprint,
# with the section and key of the search space they override.
_OVERRIDES = (
    ("--epochs-head", "training", "epochs_head"),
    ("--epochs-finetune", "training", "epochs_finetune"),
    ("--batch-size", "training", "batch_size"),
    ("--tuner", "tuner", "oracle"),
    ("--max-trials", "tuner", "max_trials"),
)


def _sweep_command(space: str, sizes, results: Results | None = None) -> str:
    """Build the search command for `sizes`, repeating the overrides of the space's projects.

    A project only resumes under the settings it was created with, so options
    that an existing project of `space` used are added to the command.
    """
    command = f"python -m study.search --search-space {space} --size {' '.join(map(str, sizes))}"
    configs = []
    if results is not None:
        configs = [c for (name, _), c in sorted(results.configs.items()) if name == space]
    if not configs:
        return command
    used = configs[0].get("search_space", {})
    try:
        from study.search_space import load_search_space

        defaults = load_search_space(space).to_dict()
    except Exception:  # noqa: BLE001 - any failure means: spell out every option
        defaults = {}
    for option, section, key in _OVERRIDES:
        value = used.get(section, {}).get(key)
        if value is not None and value != defaults.get(section, {}).get(key):
            command += f" {option} {value}"
    seed = configs[0].get("seed")
    if seed not in (None, 0):
        command += f" --seed {seed}"
    return command


def introduction(results: Results, text: Language) -> list[Block]:
    trials = results.trials
    completed = int((trials["status"] == "completed").sum())
    return [
        Heading(text("title"), 1),
        Paragraph(
            text(
                "intro",
                trials=len(trials),
                spaces=trials["search_space"].nunique(),
                completed=completed,
                other=len(trials) - completed,
            )
        ),
        Paragraph(text("protocol_note")),
    ]


def _data_copy(results: Results, row) -> tuple[str, str]:
    """Return the data source with its kind, and its sha256, for a trial's project."""
    config = results.configs.get((row["search_space"], int(row["size"])), {})
    source = config.get("data_source") or MISSING
    kind = config.get("data_kind") or _value(row, "data_kind") or MISSING
    sha256 = config.get("data_sha256") or _value(row, "data_sha256")
    return f"`{source}` ({kind})", _short_hash(sha256)


def baseline(results: Results, text: Language) -> list[Block]:
    best = best_trials(results.trials)
    best = best[best["search_space"] == BASELINE].set_index("size", drop=False)
    blocks: list[Block] = [
        Heading(text("h_baseline"), 2, "baseline"),
        Paragraph(text("baseline_intro")),
    ]

    rows = []
    for size, original in ORIGINAL_NOTEBOOKS.items():
        trial = best.loc[size] if size in best.index else None
        for column, measure in BASELINE_MEASURES:
            expected = original.get(column)
            reproduced = _value(trial, column) if trial is not None else None
            difference = (
                (reproduced - expected) * 100
                if is_number(expected) and is_number(reproduced)
                else None
            )
            rows.append((
                text.integer(size),
                text(measure),
                text.general(expected),
                text.number(reproduced),
                text.signed(difference),
            ))
    blocks.append(Table(
        (
            text("col_size"), text("col_measure"), text("col_original"),
            text("col_reproduced"), text("col_difference"),
        ),
        tuple(rows),
        numeric=frozenset({0, 2, 3, 4}),
    ))

    for size in ORIGINAL_NOTEBOOKS:
        if size not in best.index:
            status = _status_counts(results, BASELINE, size, text)
            blocks.append(Paragraph(
                text("baseline_missing", size=text.integer(size), status=status)
            ))
            blocks.append(Code(_sweep_command(BASELINE, [size], results)))

    runs = []
    for size in ORIGINAL_NOTEBOOKS:
        if size in best.index:
            trial = best.loc[size]
            data, sha256 = _data_copy(results, trial)
            runs.append((
                text.integer(size), str(trial["trial_id"]), f"`{trial['protocol']}`",
                data, sha256,
            ))
    if runs:
        blocks.append(Paragraph(text("baseline_runs")))
        blocks.append(Table(
            (
                text("col_size"), text("col_trial"), text("col_protocol"),
                text("col_data"), text("col_data_sha256"),
            ),
            tuple(runs),
            numeric=frozenset({0}),
        ))
    return blocks


def learning_curves(results: Results, text: Language) -> list[Block]:
    best = best_trials(results.trials)
    blocks: list[Block] = [
        Heading(text("h_curves"), 2, "curves"),
        Paragraph(text("curves_intro")),
    ]
    if best.empty:
        blocks.append(Paragraph(text("no_completed")))
        return blocks

    epochs = results.epochs
    for _, trial in best.iterrows():
        space, size, trial_id = trial["search_space"], int(trial["size"]), trial["trial_id"]
        rows = epochs[
            (epochs["search_space"] == space)
            & (epochs["size"] == size)
            & (epochs["trial_id"] == trial_id)
        ]
        if rows.empty:
            blocks.append(Paragraph(text(
                "curves_no_history", space=space, size=text.integer(size), trial=trial_id
            )))
            continue
        if trial["protocol"] == "test":
            validation = "legend_validation_test"
        else:
            validation = "legend_validation"
        title = text("curves_figure_title", space=space, size=text.integer(size), trial=trial_id)
        figure = figures.learning_curves(rows, text, title, text(validation))
        blocks.append(Figure(
            f"curves_{_slug(space)}_{size}.png",
            figures.png_bytes(figure),
            title,
            text(
                "curves_caption", space=space, size=text.integer(size), trial=trial_id,
                objective=text.number(trial["objective"]), protocol=trial["protocol"],
            ),
        ))
    return blocks


def _with_gap(best: pd.DataFrame) -> pd.DataFrame:
    best = best.copy()
    if "train_size" in best:
        best["train_size"] = best["train_size"].fillna(best["size"])
    else:
        best["train_size"] = best["size"]
    best["gap_pp"] = (best["final_train_accuracy"] - best["finetune_test_accuracy"]) * 100
    return best


def _sweep(results: Results, text: Language) -> list[Block]:
    """Name the standard sizes without a completed trial per search space."""
    best = best_trials(results.trials)
    sizes = ", ".join(text.integer(size) for size in STANDARD_SIZES)
    items = []
    incomplete = []
    for space in results.spaces:
        done = set(best.loc[best["search_space"] == space, "size"])
        missing = [size for size in STANDARD_SIZES if size not in done]
        if not missing:
            items.append(text("sweep_complete", space=space))
            continue
        incomplete.append(space)
        named = ", ".join(
            text.integer(size) + _status_counts(results, space, size, text) for size in missing
        )
        items.append(text("sweep_missing", space=space, sizes=named))

    blocks: list[Block] = [Paragraph(text("sweep_heading", sizes=sizes)), BulletList(tuple(items))]
    if incomplete:
        blocks.append(Paragraph(text("sweep_command")))
        for space in incomplete:
            blocks.append(Code(_sweep_command(space, STANDARD_SIZES, results)))
    return blocks


def overfitting(results: Results, text: Language) -> list[Block]:
    blocks: list[Block] = [
        Heading(text("h_overfitting"), 2, "overfitting"),
        Paragraph(text("overfitting_intro")),
    ]
    best = _with_gap(best_trials(results.trials))
    if best.empty:
        blocks.append(Paragraph(text("no_completed")))
        return blocks + _sweep(results, text)

    blocks.append(Figure(
        "overfitting.png",
        figures.png_bytes(figures.overfitting(best, text)),
        text("title_gap"),
        text("overfitting_caption"),
    ))
    blocks.append(Figure(
        "validation_loss.png",
        figures.png_bytes(figures.validation_loss(best, text)),
        text("title_val_loss"),
        text("val_loss_caption"),
    ))
    rows = []
    for _, trial in best.sort_values(["search_space", "size"]).iterrows():
        rows.append((
            f"`{trial['search_space']}`",
            text.integer(trial["size"]),
            text.integer(trial["train_size"]),
            str(trial["trial_id"]),
            text.number(_value(trial, "head_test_accuracy")),
            text.number(trial["final_train_accuracy"]),
            text.number(trial["finetune_test_accuracy"]),
            text.signed(trial["gap_pp"]),
            text.number(_value(trial, "finetune_best_val_loss")),
            f"`{trial['protocol']}`",
        ))
    blocks.append(Table(
        (
            text("col_space"), text("col_size"), text("col_train_images"), text("col_trial"),
            text("col_head_test_accuracy"), text("col_train_accuracy"),
            text("col_test_accuracy"), text("col_gap"), text("col_best_val_loss"),
            text("col_protocol"),
        ),
        tuple(rows),
        numeric=frozenset({1, 2, 4, 5, 6, 7, 8}),
    ))
    return blocks + _sweep(results, text)


def _weights_description(trial, text: Language) -> str:
    weights = _value(trial, "predictions_weights")
    epoch = _value(trial, "predictions_epoch")
    if weights == "best_checkpoint" and is_number(epoch):
        return text("weights_best_checkpoint", epoch=int(epoch))
    if weights == "best_checkpoint":
        return text("weights_best_checkpoint_no_epoch")
    if weights == "final":
        return text("weights_final")
    return text("weights_unknown")


def predictions(results: Results, text: Language) -> list[Block]:
    blocks: list[Block] = [
        Heading(text("h_predictions"), 2, "predictions"),
        Paragraph(text("predictions_intro")),
    ]
    best = best_trials(results.trials)
    if best.empty:
        blocks.append(Paragraph(text("no_completed")))
        return blocks

    for _, trial in best.iterrows():
        space, size, trial_id = trial["search_space"], int(trial["size"]), trial["trial_id"]
        names = {"space": space, "size": text.integer(size), "trial": trial_id}
        recorded = _value(trial, "predictions_file")
        path = results.trial_dir(space, size, trial_id) / (recorded or PREDICTIONS_FILE)
        if not path.is_file():
            # A record without a predictions entry comes from a trial that ran
            # before the study stored predictions.
            key = "predictions_file_missing" if recorded else "predictions_missing"
            blocks.append(Paragraph(text(key, file=path.name, **names)))
            continue
        try:
            stored = read_predictions(path)
        except (OSError, ValueError) as exc:
            blocks.append(Paragraph(text("predictions_unreadable", error=exc, **names)))
            continue

        slug = f"{_slug(space)}_{size}"
        count = len(stored.examples)
        if count:
            figure = figures.example_grid(
                stored.examples,
                stored.labels[stored.example_indices],
                stored.predicted[stored.example_indices],
                CLASS_NAMES, text,
            )
            blocks.append(Figure(
                f"examples_{slug}.png",
                figures.png_bytes(figure),
                text("examples_alt", **names),
                text("examples_caption", count=count, **names),
            ))
        caption = text(
            "confusion_caption", count=text.integer(len(stored.labels)),
            accuracy=text.number(stored.accuracy), weights=_weights_description(trial, text),
            **names,
        )
        if trial["protocol"] == "test":
            caption += text("confusion_optimistic")
        figure = figures.confusion_matrix(stored.labels, stored.predicted, CLASS_NAMES, text)
        blocks.append(Figure(
            f"confusion_{slug}.png", figures.png_bytes(figure), text("confusion_alt", **names),
            caption,
        ))
    return blocks


def _hyperparameter_names(trials: pd.DataFrame) -> list[str]:
    """Hyperparameters with a value in any of `trials`, in table column order."""
    return [
        column.removeprefix(HYPERPARAMETER_PREFIX)
        for column in trials.columns
        if column.startswith(HYPERPARAMETER_PREFIX) and trials[column].notna().any()
    ]


def _best_values_table(best: pd.DataFrame, names: list[str], text: Language) -> Table:
    """Tabulate the best trials of a space: one column per size, one row per hyperparameter."""
    best = best.sort_values("size")
    header = (text("col_hyperparameter"), *(text.integer(size) for size in best["size"]))
    rows = [
        (text("row_trial"), *(str(t) for t in best["trial_id"])),
        (text("row_objective"), *(text.number(v) for v in best["objective"])),
    ]
    for name in names:
        values = best[f"{HYPERPARAMETER_PREFIX}{name}"]
        rows.append((f"`{name}`", *(text.general(_plain(v)) for v in values)))
    return Table(header, tuple(rows), numeric=frozenset(range(1, len(header))))


def _plain(value):
    """Turn numpy scalars into Python values and NaN into None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _unfinished(results: Results, text: Language) -> list[Block]:
    trials = results.trials
    unfinished = trials[trials["status"] != "completed"]
    blocks: list[Block] = [Heading(text("h_unfinished"), 3)]
    if unfinished.empty:
        return blocks + [Paragraph(text("unfinished_none"))]
    rows = []
    for _, trial in unfinished.sort_values(["search_space", "size", "trial_id"]).iterrows():
        reason = _value(trial, "reason")
        rows.append((
            f"`{trial['search_space']}`",
            text.integer(trial["size"]),
            str(trial["trial_id"]),
            text.status(trial["status"]),
            " ".join(str(reason).split()) if reason is not None else MISSING,
        ))
    blocks.append(Paragraph(text("unfinished_intro")))
    blocks.append(Table(
        (
            text("col_space"), text("col_size"), text("col_trial"), text("col_status"),
            text("col_reason"),
        ),
        tuple(rows),
        numeric=frozenset({1}),
    ))
    return blocks


def hyperparameters(results: Results, text: Language) -> list[Block]:
    blocks: list[Block] = [
        Heading(text("h_hyperparameters"), 2, "hyperparameters"),
        Paragraph(text("hyperparameters_intro")),
    ]
    trials = results.trials
    best = best_trials(trials)
    for space in results.spaces:
        space_best = best[best["search_space"] == space]
        if space_best.empty:
            continue
        space_trials = trials[trials["search_space"] == space]
        names = _hyperparameter_names(space_trials)
        blocks.append(Heading(f"`{space}`", 3))
        blocks.append(Paragraph(text("best_values", space=space)))
        blocks.append(_best_values_table(space_best, names, text))

        completed = space_trials[
            (space_trials["status"] == "completed") & space_trials["objective"].notna()
        ]
        varying = [
            name for name in names
            if completed[f"{HYPERPARAMETER_PREFIX}{name}"].nunique(dropna=True) > 1
        ]
        if not varying:
            blocks.append(Paragraph(text("panels_none", space=space)))
            continue
        figure = figures.hyperparameter_panels(completed, varying, text)
        blocks.append(Figure(
            f"hyperparameters_{_slug(space)}.png",
            figures.png_bytes(figure),
            text("panels_alt", space=space),
            text("panels_caption", space=space),
        ))
    return blocks + _unfinished(results, text)


def _project_name(space: str, size: int) -> str:
    return f"`{space}/size_{size}`"


def _input_lines(results: Results, text: Language) -> list[str]:
    """Describe each distinct CIFAR-10 copy and weights file with the projects that used it."""
    data: dict[tuple, list[str]] = {}
    weights: dict[tuple, list[str]] = {}
    trials = results.trials
    for space, size in results.projects:
        config = dict(results.configs.get((space, size), {}))
        rows = trials[(trials["search_space"] == space) & (trials["size"] == size)]
        if not rows.empty:
            # Projects without a study_config.json still have the trials' own provenance.
            for key in ("data_kind", "data_sha256", "weights_route", "weights_sha256"):
                if not config.get(key):
                    config[key] = _value(rows.iloc[0], key)
        unknown = text("unknown")
        data_key = (
            config.get("data_source") or unknown,
            config.get("data_kind") or unknown,
            config.get("data_sha256") or unknown,
        )
        weights_key = (
            config.get("weights_route") or unknown,
            config.get("weights_sha256") or unknown,
        )
        data.setdefault(data_key, []).append(_project_name(space, size))
        weights.setdefault(weights_key, []).append(_project_name(space, size))

    lines = []
    for (source, kind, sha256), projects in data.items():
        lines.append(text(
            "data_line", source=f"`{source}`", kind=kind, sha256=sha256,
            projects=", ".join(projects),
        ))
    for (route, sha256), projects in weights.items():
        lines.append(text(
            "weights_line", route=route, sha256=sha256, projects=", ".join(projects),
        ))
    return lines


def _budget_table(results: Results, text: Language) -> Table:
    rows = []
    for space, size in results.projects:
        config = results.configs.get((space, size))
        if config is None:
            rows.append((
                f"`{space}`", text.integer(size), text("config_missing"),
                *([MISSING] * 6),
            ))
            continue
        settings = config.get("search_space", {})
        training = settings.get("training", {})
        tuner = settings.get("tuner", {})
        protocol = config.get("protocol") or training.get("validation_protocol")
        rows.append((
            f"`{space}`",
            text.integer(size),
            _short_hash(config.get("search_space_fingerprint")),
            text.general(training.get("epochs_head")),
            text.general(training.get("epochs_finetune")),
            text.general(training.get("batch_size")),
            f"`{tuner.get('oracle', MISSING)}`",
            text.general(tuner.get("max_trials")),
            f"`{protocol}`" if protocol else MISSING,
        ))
    return Table(
        (
            text("col_space"), text("col_size"), text("col_fingerprint"),
            text("col_epochs_head"), text("col_epochs_finetune"), text("col_batch_size"),
            text("col_oracle"), text("col_max_trials"), text("col_protocol"),
        ),
        tuple(rows),
        numeric=frozenset({1, 3, 4, 5, 7}),
    )


def _machine_table(results: Results, text: Language) -> Table:
    trials = results.trials
    rows = []
    for space, size in results.projects:
        config = results.configs.get((space, size), {})
        chosen = trials[(trials["search_space"] == space) & (trials["size"] == size)]
        completed = int((chosen["status"] == "completed").sum())
        seconds = chosen["duration_s"].sum(min_count=1) if "duration_s" in chosen else None
        rows.append((
            f"`{space}`",
            text.integer(size),
            config.get("machine") or MISSING,
            config.get("keras_backend") or MISSING,
            f"{completed} / {len(chosen)}",
            text.duration(seconds),
        ))
    return Table(
        (
            text("col_space"), text("col_size"), text("col_machine"), text("col_backend"),
            text("col_trials"), text("col_trial_time"),
        ),
        tuple(rows),
        numeric=frozenset({1, 4, 5}),
    )


def _runs_table(runs: list[dict], text: Language) -> Table:
    rows = []
    for run in runs:
        exit_status = run.get("exit")
        rows.append((
            str(run.get("run", MISSING)),
            f"`{run['command']}`" if run.get("command") else MISSING,
            f"`{run['commit']}`" if run.get("commit") else MISSING,
            str(run.get("machine") or MISSING),
            str(run.get("started") or MISSING),
            text.duration(run.get("wall_s")),
            str(exit_status) if exit_status is not None else MISSING,
        ))
    return Table(
        (
            text("col_run"), text("col_command"), text("col_commit"), text("col_machine"),
            text("col_started"), text("col_wall_time"), text("col_exit"),
        ),
        tuple(rows),
        numeric=frozenset({5, 6}),
    )


def provenance(results: Results, text: Language) -> list[Block]:
    blocks: list[Block] = [
        Heading(text("h_provenance"), 2, "provenance"),
        BulletList(tuple(_input_lines(results, text))),
        Paragraph(text("projects_heading")),
        _budget_table(results, text),
        Paragraph(text("machines_heading")),
        _machine_table(results, text),
    ]
    if results.runs is None:
        blocks.append(Paragraph(text("runs_none")))
    else:
        blocks.append(Paragraph(text("runs_heading")))
        blocks.append(_runs_table(results.runs, text))
    return blocks
