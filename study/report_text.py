"""Every word of the report in English and German, and number formatting per language.

`language(code)` returns a `Language`: call it with a key and the values of the
key's placeholders to get a string (`text("h_curves")`,
`text("curves_caption", space="default", ...)`). Its methods format numbers
with the language's decimal and thousands marks, so the German report writes
0,247 and 10.000 where the English one writes 0.247 and 10,000. Class names and
hyperparameter names stay English in both languages because they are
identifiers of the data set and the search spaces.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping

MISSING = "–"
# Unicode minus, so negative differences line up with the positive ones.
MINUS = "\u2212"

ENGLISH = {
    "title": "ResNet50 transfer learning on CIFAR-10: study report",
    "intro": (
        "This report covers {trials} trials in {spaces} search spaces ({completed} "
        "completed, {other} not completed). Every trial first trains the head on the "
        "frozen ImageNet ResNet50 (phase 1) and then fine-tunes the backbone (phase 2). "
        "The best trial of a search space and size is its completed trial with the "
        "highest phase-2 validation accuracy, which is the objective of the search."
    ),
    "contents": "Contents",
    "protocol_note": (
        "Validation protocols: under `test` the validation data is the test set, as in "
        "the original notebooks. The objective is then a test-set accuracy, and the best "
        "trial and the best checkpoint were chosen on the test set. Under `holdout` the "
        "validation data is held out of the training images, and the test set is only "
        "used for reporting."
    ),
    # Baseline reproduction
    "h_baseline": "Baseline reproduction",
    "baseline_intro": (
        "The `baseline` search space repeats the setup of the original notebooks: inputs "
        "divided by 255, 32 px images, BatchNormalization trainable and the test set as "
        "validation data. The table sets the figures of the original notebooks beside "
        "the best completed `baseline` trial of each size. The difference is reproduced "
        "minus original in percentage points, and “–” marks a figure that the notebooks "
        "do not give. The notebooks record neither their epoch counts nor their learning "
        "rates, so the values here are choices (30 head epochs at 1e-3, 10 fine-tuning "
        "epochs at 1e-5, Adam, batch size 64; see `search_spaces/baseline.toml`), and a "
        "gap can come from them as well as from the data copy."
    ),
    "col_size": "Size",
    "col_measure": "Measure",
    "col_original": "Original notebooks",
    "col_reproduced": "Reproduced",
    "col_difference": "Difference (pp)",
    "measure_head_train": "Head phase: train accuracy",
    "measure_head_test": "Head phase: test accuracy",
    "measure_final_train": "After fine-tuning: train accuracy",
    "measure_final_test": "After fine-tuning: test accuracy",
    "baseline_missing": (
        "No completed `baseline` trial at {size} images{status}. This command produces it:"
    ),
    "baseline_runs": "The reproduced runs and the CIFAR-10 copy they read:",
    "col_trial": "Trial",
    "col_protocol": "Protocol",
    "col_data": "Data (kind)",
    "col_data_sha256": "Data sha256",
    # Learning curves
    "h_curves": "Learning curves",
    "curves_intro": (
        "Accuracy and loss per epoch of the best trial of each search space and size. "
        "Phase 1 (head) and phase 2 (fine-tuning) share one epoch axis, and the dotted "
        "vertical line marks where phase 2 starts."
    ),
    "curves_caption": (
        "`{space}`, size {size}: best trial {trial}, objective {objective}, "
        "protocol `{protocol}`. Solid lines show the training data and dashed lines the "
        "validation data."
    ),
    "curves_figure_title": "{space}, size {size}, trial {trial}",
    "curves_no_history": "`{space}`, size {size}: the best trial {trial} stored no epochs.",
    "no_completed": "No trial has completed yet.",
    "axis_epoch": "epoch (phase 1 and phase 2)",
    "axis_accuracy": "accuracy",
    "axis_loss": "loss",
    "axis_loss_log": "loss (log scale)",
    "legend_train": "training",
    "legend_validation": "validation",
    "legend_validation_test": "validation (test set)",
    "phase_head": "phase 1: head",
    "phase_finetune": "phase 2: fine-tuning",
    # Overfitting against sample count
    "h_overfitting": "Overfitting against sample count",
    "overfitting_intro": (
        "For the best trial of each search space and size: the gap between training and "
        "test accuracy after the last fine-tuning epoch, and the test accuracy, against "
        "the number of training images. A wide gap means the network fits its training "
        "images far better than new ones. The training accuracy is Keras' running mean "
        "over the last epoch, with dropout active and, where BatchNormalization trains, "
        "batch statistics in use; the test accuracy is an inference-mode evaluation of "
        "the final weights. A confusion matrix below may show another accuracy, because "
        "it uses the best checkpoint."
    ),
    "overfitting_caption": (
        "Left: training accuracy minus test accuracy after fine-tuning, in percentage "
        "points. Right: test accuracy after fine-tuning. One line per search space."
    ),
    "val_loss_caption": (
        "Lowest phase-2 validation loss of the best trial of each size. Under protocol "
        "`test` this is a test-set loss."
    ),
    "axis_train_images": "training images (log scale)",
    "axis_gap": "training − test accuracy (pp)",
    "axis_test_accuracy": "test accuracy",
    "axis_best_val_loss": "best phase-2 validation loss",
    "title_gap": "Overfitting gap",
    "title_test_accuracy": "Test accuracy",
    "title_val_loss": "Validation loss",
    "col_space": "Search space",
    "col_train_images": "Training images",
    "col_head_test_accuracy": "Test accuracy after phase 1",
    "col_train_accuracy": "Training accuracy",
    "col_test_accuracy": "Test accuracy",
    "col_gap": "Gap (pp)",
    "col_best_val_loss": "Best phase-2 validation loss",
    "sweep_heading": "Standard sweep sizes {sizes}:",
    "sweep_complete": "`{space}`: every standard size has a completed trial.",
    "sweep_missing": "`{space}`: no completed trial at {sizes}.",
    "sweep_command": (
        "These commands run the whole sweep of each search space with the settings of "
        "its existing projects. They resume the sizes that already have a project and "
        "add the missing ones:"
    ),
    "status_counts": " (trials: {counts})",
    # Example predictions
    "h_predictions": "Example predictions",
    "predictions_intro": (
        "The best trial of each search space and size stores the class probabilities "
        "of its best phase-2 weights for every test image, together with 32 example "
        "test images, in `predictions.npz`."
    ),
    "predictions_missing": (
        "`{space}`, size {size}: the best trial {trial} has no predictions file, "
        "because it ran before the study stored predictions. Rerunning the size with "
        "`--overwrite` replaces its trials and writes one."
    ),
    "predictions_file_missing": (
        "`{space}`, size {size}: the record of the best trial {trial} names `{file}`, "
        "which is missing from its trial folder."
    ),
    "predictions_unreadable": (
        "`{space}`, size {size}: the predictions file of trial {trial} is unreadable "
        "({error})."
    ),
    "examples_caption": (
        "`{space}`, size {size}, trial {trial}: {count} stored test images. Each "
        "title gives the predicted class, marked ✓ (right, green) or ✗ (wrong, red), "
        "and below it the true class."
    ),
    "confusion_caption": (
        "`{space}`, size {size}, trial {trial}: confusion matrix of {count} test images, "
        "each row normalised to its true class. Accuracy of these predictions: "
        "{accuracy}, from {weights}."
    ),
    "confusion_optimistic": (
        " The best checkpoint was selected on the test set (protocol `test`), so this "
        "accuracy is optimistic."
    ),
    "weights_best_checkpoint": "the best phase-2 checkpoint (epoch {epoch})",
    "weights_best_checkpoint_no_epoch": "the best phase-2 checkpoint",
    "weights_final": "the final phase-2 weights",
    "weights_unknown": "weights of unrecorded origin",
    "example_true": "true: {name}",
    "examples_alt": "Example test images, {space}, size {size}",
    "confusion_alt": "Confusion matrix, {space}, size {size}",
    "axis_true_class": "true class",
    "axis_predicted_class": "predicted class",
    # Hyperparameters
    "h_hyperparameters": "Hyperparameters",
    "hyperparameters_intro": (
        "The tables give the hyperparameter values of the best trial of each size. For "
        "every hyperparameter that varies within a search space, a panel plots the "
        "objective of each completed trial against the value of that hyperparameter."
    ),
    "best_values": "`{space}`: values of the best trial per size.",
    "col_hyperparameter": "Hyperparameter",
    "row_trial": "trial",
    "row_objective": "objective",
    "panels_caption": (
        "`{space}`: objective (best phase-2 validation accuracy) of every completed "
        "trial against each hyperparameter that varies, coloured by size."
    ),
    "panels_alt": "Objective against hyperparameters, {space}",
    "panels_none": "`{space}`: no hyperparameter varies between its completed trials.",
    "axis_objective": "objective",
    "legend_size": "size",
    "h_unfinished": "Trials that did not complete",
    "unfinished_none": "Every trial completed.",
    "unfinished_intro": (
        "Failed and interrupted trials with their reason. A trial shown as running is "
        "either still training or was stopped before it could record an outcome."
    ),
    "col_status": "Status",
    "col_reason": "Reason",
    "status_completed": "completed",
    "status_failed": "failed",
    "status_interrupted": "interrupted",
    "status_running": "running",
    # Provenance
    "h_provenance": "Provenance",
    "data_line": "CIFAR-10: {source} ({kind}), sha256 `{sha256}`. Used by: {projects}.",
    "weights_line": "ResNet50 weights: route `{route}`, sha256 `{sha256}`. Used by: {projects}.",
    "unknown": "unknown",
    "projects_heading": "Search spaces and budgets per project:",
    "col_fingerprint": "Fingerprint",
    "col_epochs_head": "Head epochs",
    "col_epochs_finetune": "Fine-tuning epochs",
    "col_batch_size": "Batch size",
    "col_oracle": "Oracle",
    "col_max_trials": "Max trials",
    "machines_heading": "Machines and trial time per project:",
    "col_machine": "Machine",
    "col_backend": "Keras backend",
    "col_trials": "Trials (completed / all)",
    "col_trial_time": "Total trial time",
    "runs_heading": "Runs recorded in `runs.jsonl`:",
    "runs_none": "The results folder has no `runs.jsonl`.",
    "col_run": "Run",
    "col_command": "Command",
    "col_commit": "Commit",
    "col_started": "Started",
    "col_wall_time": "Wall time",
    "col_exit": "Exit status",
    "config_missing": "(no study_config.json)",
    # Units
    "seconds": "{seconds} s",
    "minutes": "{minutes} min {seconds:02d} s",
    "hours": "{hours} h {minutes:02d} min",
}

GERMAN = {
    "title": "ResNet50-Transferlernen auf CIFAR-10: Bericht zur Studie",
    "intro": (
        "Dieser Bericht fasst {trials} Trials in {spaces} Suchräumen zusammen "
        "({completed} abgeschlossen, {other} nicht abgeschlossen). Jeder Trial trainiert "
        "zuerst den Head auf dem eingefrorenen ImageNet-ResNet50 (Phase 1) und führt "
        "danach das Fine-Tuning des Backbones durch (Phase 2). Als bester Trial eines "
        "Suchraums und einer Größe gilt der abgeschlossene Trial mit der höchsten "
        "Validierungsgenauigkeit in Phase 2, denn die Suche maximiert diese Zielgröße."
    ),
    "contents": "Inhalt",
    "protocol_note": (
        "Validierungsprotokolle: Bei `test` sind die Validierungsdaten der Testdatensatz, "
        "wie in den ursprünglichen Notebooks. Die Zielgröße ist dann eine "
        "Testgenauigkeit, und bester Trial und bester Checkpoint wurden anhand des "
        "Testdatensatzes ausgewählt. Bei `holdout` werden die Validierungsdaten von den Trainingsbildern "
        "abgetrennt, und der Testdatensatz dient nur der Auswertung."
    ),
    "h_baseline": "Reproduktion der Baseline",
    "baseline_intro": (
        "Der Suchraum `baseline` wiederholt den Aufbau der ursprünglichen Notebooks: "
        "Eingaben durch 255 geteilt, Bilder mit 32 px, BatchNormalization trainierbar "
        "und der Testdatensatz als Validierungsdaten. Die Tabelle stellt die Zahlen der "
        "ursprünglichen Notebooks dem besten abgeschlossenen `baseline`-Trial jeder "
        "Größe gegenüber. Die Differenz ist „reproduziert minus original“ in "
        "Prozentpunkten, und „–“ steht für einen Wert, den die Notebooks nicht angeben. "
        "Die Notebooks halten weder ihre Epochenzahlen noch ihre Lernraten fest. Die "
        "Werte hier sind daher gewählt (30 Epochen für den Head mit 1e-3, 10 Epochen "
        "Fine-Tuning mit 1e-5, Adam, Batchgröße 64; siehe `search_spaces/baseline.toml`), "
        "und eine Abweichung kann ebenso von ihnen wie von der Datenkopie kommen."
    ),
    "col_size": "Größe",
    "col_measure": "Kennzahl",
    "col_original": "Ursprüngliche Notebooks",
    "col_reproduced": "Reproduziert",
    "col_difference": "Differenz (Prozentpunkte)",
    "measure_head_train": "Head-Phase: Trainingsgenauigkeit",
    "measure_head_test": "Head-Phase: Testgenauigkeit",
    "measure_final_train": "Nach dem Fine-Tuning: Trainingsgenauigkeit",
    "measure_final_test": "Nach dem Fine-Tuning: Testgenauigkeit",
    "baseline_missing": (
        "Kein abgeschlossener `baseline`-Trial mit {size} Bildern{status}. Dieser Befehl "
        "erzeugt ihn:"
    ),
    "baseline_runs": "Die reproduzierten Läufe und die CIFAR-10-Kopie, die sie gelesen haben:",
    "col_trial": "Trial",
    "col_protocol": "Protokoll",
    "col_data": "Daten (Format)",
    "col_data_sha256": "Daten-sha256",
    "h_curves": "Lernkurven",
    "curves_intro": (
        "Genauigkeit und Verlust je Epoche für den besten Trial jedes Suchraums und "
        "jeder Größe. Phase 1 (Head) und Phase 2 (Fine-Tuning) teilen sich eine "
        "Epochenachse, und die gepunktete senkrechte Linie markiert den Beginn von "
        "Phase 2."
    ),
    "curves_caption": (
        "`{space}`, Größe {size}: bester Trial {trial}, Zielgröße {objective}, "
        "Protokoll `{protocol}`. Durchgezogene Linien zeigen die Trainingsdaten, "
        "gestrichelte die Validierungsdaten."
    ),
    "curves_figure_title": "{space}, Größe {size}, Trial {trial}",
    "curves_no_history": (
        "`{space}`, Größe {size}: Der beste Trial {trial} hat keine Epochen gespeichert."
    ),
    "no_completed": "Noch kein Trial ist abgeschlossen.",
    "axis_epoch": "Epoche (Phase 1 und Phase 2)",
    "axis_accuracy": "Genauigkeit",
    "axis_loss": "Verlust",
    "axis_loss_log": "Verlust (logarithmische Skala)",
    "legend_train": "Training",
    "legend_validation": "Validierung",
    "legend_validation_test": "Validierung (Testdatensatz)",
    "phase_head": "Phase 1: Head",
    "phase_finetune": "Phase 2: Fine-Tuning",
    "h_overfitting": "Überanpassung und Stichprobengröße",
    "overfitting_intro": (
        "Für den besten Trial jedes Suchraums und jeder Größe: die Lücke zwischen "
        "Trainings- und Testgenauigkeit nach der letzten Epoche des Fine-Tunings sowie "
        "die Testgenauigkeit, aufgetragen über der Zahl der Trainingsbilder. Eine große "
        "Lücke heißt, dass das Netz seine Trainingsbilder weit besser trifft als neue "
        "Bilder. Die Trainingsgenauigkeit ist der laufende Mittelwert von Keras über die "
        "letzte Epoche, mit aktivem Dropout und, wo BatchNormalization trainiert, mit "
        "Batch-Statistiken. Die Testgenauigkeit ist eine Auswertung der letzten Gewichte "
        "im Inferenzmodus. Eine Konfusionsmatrix weiter unten kann eine andere "
        "Genauigkeit zeigen, weil sie den besten Checkpoint verwendet."
    ),
    "overfitting_caption": (
        "Links: Trainingsgenauigkeit minus Testgenauigkeit nach dem Fine-Tuning, in "
        "Prozentpunkten. Rechts: Testgenauigkeit nach dem Fine-Tuning. Eine Linie je "
        "Suchraum."
    ),
    "val_loss_caption": (
        "Kleinster Validierungsverlust in Phase 2 des besten Trials jeder Größe. Beim "
        "Protokoll `test` ist das ein Verlust auf dem Testdatensatz."
    ),
    "axis_train_images": "Trainingsbilder (logarithmische Skala)",
    "axis_gap": "Trainings- minus Testgenauigkeit\n(Prozentpunkte)",
    "axis_test_accuracy": "Testgenauigkeit",
    "axis_best_val_loss": "Bester Validierungsverlust in Phase 2",
    "title_gap": "Lücke zwischen Training und Test",
    "title_test_accuracy": "Testgenauigkeit",
    "title_val_loss": "Validierungsverlust",
    "col_space": "Suchraum",
    "col_train_images": "Trainingsbilder",
    "col_head_test_accuracy": "Testgenauigkeit nach Phase 1",
    "col_train_accuracy": "Trainingsgenauigkeit",
    "col_test_accuracy": "Testgenauigkeit",
    "col_gap": "Lücke (Prozentpunkte)",
    "col_best_val_loss": "Bester Validierungsverlust in Phase 2",
    "sweep_heading": "Standardgrößen der Messreihe {sizes}:",
    "sweep_complete": "`{space}`: Jede Standardgröße hat einen abgeschlossenen Trial.",
    "sweep_missing": "`{space}`: kein abgeschlossener Trial bei {sizes}.",
    "sweep_command": (
        "Diese Befehle starten die ganze Messreihe jedes Suchraums mit den Einstellungen "
        "seiner vorhandenen Projekte. Sie setzen die Größen fort, die schon ein Projekt "
        "haben, und ergänzen die fehlenden:"
    ),
    "status_counts": " (Trials: {counts})",
    "h_predictions": "Beispielvorhersagen",
    "predictions_intro": (
        "Der beste Trial jedes Suchraums und jeder Größe speichert in `predictions.npz` "
        "die Klassenwahrscheinlichkeiten seiner besten Gewichte aus Phase 2 für jedes "
        "Testbild, dazu 32 Beispielbilder aus dem Testdatensatz."
    ),
    "predictions_missing": (
        "`{space}`, Größe {size}: Der beste Trial {trial} hat keine Vorhersagedatei, weil "
        "er lief, bevor die Studie Vorhersagen gespeichert hat. Ein erneuter Lauf dieser "
        "Größe mit `--overwrite` ersetzt ihre Trials und schreibt eine."
    ),
    "predictions_file_missing": (
        "`{space}`, Größe {size}: Der Eintrag des besten Trials {trial} nennt `{file}`, "
        "aber die Datei fehlt in seinem Trial-Ordner."
    ),
    "predictions_unreadable": (
        "`{space}`, Größe {size}: Die Vorhersagedatei von Trial {trial} ist nicht lesbar "
        "({error})."
    ),
    "examples_caption": (
        "`{space}`, Größe {size}, Trial {trial}: {count} gespeicherte Testbilder. Über "
        "jedem Bild steht die vorhergesagte Klasse, markiert mit ✓ (richtig, grün) oder "
        "✗ (falsch, rot), darunter die tatsächliche Klasse."
    ),
    "confusion_caption": (
        "`{space}`, Größe {size}, Trial {trial}: Konfusionsmatrix über {count} Testbilder, "
        "jede Zeile auf ihre tatsächliche Klasse normiert. Genauigkeit dieser Vorhersagen: "
        "{accuracy}, mit {weights}."
    ),
    "confusion_optimistic": (
        " Der beste Checkpoint wurde anhand des Testdatensatzes ausgewählt (Protokoll `test`), "
        "daher ist diese Genauigkeit optimistisch."
    ),
    "weights_best_checkpoint": "dem besten Checkpoint aus Phase 2 (Epoche {epoch})",
    "weights_best_checkpoint_no_epoch": "dem besten Checkpoint aus Phase 2",
    "weights_final": "den letzten Gewichten aus Phase 2",
    "weights_unknown": "Gewichten unbekannter Herkunft",
    "example_true": "tatsächlich: {name}",
    "examples_alt": "Beispiel-Testbilder, {space}, Größe {size}",
    "confusion_alt": "Konfusionsmatrix, {space}, Größe {size}",
    "axis_true_class": "Wahre Klasse",
    "axis_predicted_class": "Vorhergesagte Klasse",
    "h_hyperparameters": "Hyperparameter",
    "hyperparameters_intro": (
        "Die Tabellen zeigen die Hyperparameter des besten Trials jeder Größe. Für jeden "
        "Hyperparameter, der innerhalb eines Suchraums variiert, trägt ein Diagramm die "
        "Zielgröße jedes abgeschlossenen Trials über dem Wert dieses Hyperparameters auf."
    ),
    "best_values": "`{space}`: Werte des besten Trials je Größe.",
    "col_hyperparameter": "Hyperparameter",
    "row_trial": "Trial",
    "row_objective": "Zielgröße",
    "panels_caption": (
        "`{space}`: Zielgröße (beste Validierungsgenauigkeit in Phase 2) jedes "
        "abgeschlossenen Trials über jedem variierenden Hyperparameter, eingefärbt "
        "nach Größe."
    ),
    "panels_alt": "Zielgröße über den Hyperparametern, {space}",
    "panels_none": (
        "`{space}`: Kein Hyperparameter variiert zwischen den abgeschlossenen Trials."
    ),
    "axis_objective": "Zielgröße",
    "legend_size": "Größe",
    "h_unfinished": "Nicht abgeschlossene Trials",
    "unfinished_none": "Alle Trials sind abgeschlossen.",
    "unfinished_intro": (
        "Fehlgeschlagene und unterbrochene Trials mit ihrem Grund. Ein Trial mit dem "
        "Status „laufend“ trainiert entweder noch oder wurde angehalten, bevor er ein "
        "Ergebnis speichern konnte."
    ),
    "col_status": "Status",
    "col_reason": "Grund",
    "status_completed": "abgeschlossen",
    "status_failed": "fehlgeschlagen",
    "status_interrupted": "unterbrochen",
    "status_running": "laufend",
    "h_provenance": "Herkunft",
    "data_line": "CIFAR-10: {source} ({kind}), sha256 `{sha256}`. Verwendet von: {projects}.",
    "weights_line": (
        "ResNet50-Gewichte: Bezugsweg `{route}`, sha256 `{sha256}`. Verwendet von: "
        "{projects}."
    ),
    "unknown": "unbekannt",
    "projects_heading": "Suchräume und Budgets je Projekt:",
    "col_fingerprint": "Fingerabdruck",
    "col_epochs_head": "Epochen Head",
    "col_epochs_finetune": "Epochen Fine-Tuning",
    "col_batch_size": "Batchgröße",
    "col_oracle": "Oracle",
    "col_max_trials": "Max. Trials",
    "machines_heading": "Rechner und Trial-Zeit je Projekt:",
    "col_machine": "Rechner",
    "col_backend": "Keras-Backend",
    "col_trials": "Trials (abgeschlossen / alle)",
    "col_trial_time": "Trial-Zeit gesamt",
    "runs_heading": "Läufe aus `runs.jsonl`:",
    "runs_none": "Der Ergebnisordner enthält keine `runs.jsonl`.",
    "col_run": "Lauf",
    "col_command": "Befehl",
    "col_commit": "Commit",
    "col_started": "Start",
    "col_wall_time": "Laufzeit",
    "col_exit": "Exit-Status",
    "config_missing": "(keine study_config.json)",
    "seconds": "{seconds} s",
    "minutes": "{minutes} min {seconds:02d} s",
    "hours": "{hours} h {minutes:02d} min",
}


@dataclasses.dataclass(frozen=True)
class Language:
    """The strings and number marks of one report language."""

    code: str
    strings: Mapping[str, str]
    decimal_mark: str
    thousands_mark: str

    def __call__(self, key: str, **values) -> str:
        """Return the string `key` with its placeholders filled from `values`."""
        return self.strings[key].format(**values)

    def _localise(self, english: str) -> str:
        """Swap the English marks in a formatted number for this language's."""
        marks = {",": self.thousands_mark, ".": self.decimal_mark}
        return "".join(marks.get(char, char) for char in english)

    def number(self, value, digits: int = 3) -> str:
        """Format `value` with `digits` decimals, or "–" when it is missing."""
        if not is_number(value):
            return MISSING
        return self._localise(f"{value:,.{digits}f}")

    def signed(self, value, digits: int = 1) -> str:
        """Format `value` with a sign (+ or a minus sign), or "–" when it is missing."""
        if not is_number(value):
            return MISSING
        text = self._localise(f"{abs(value):,.{digits}f}")
        if round(value, digits) == 0:
            return text
        return ("+" if value > 0 else MINUS) + text

    def tick(self, value) -> str:
        """Format an axis tick value with up to 6 significant digits."""
        text = self._localise(f"{value:.6g}")
        if text == "-0":
            return "0"
        return text.replace("-", MINUS)

    def integer(self, value) -> str:
        """Format a count with thousands marks, or "–" when it is missing."""
        if not is_number(value):
            return MISSING
        return self._localise(f"{int(value):,}")

    def general(self, value) -> str:
        """Format a hyperparameter or a figure with at most 3 significant digits."""
        if isinstance(value, str):
            return value
        if not is_number(value):
            return MISSING
        if float(value).is_integer() and abs(value) >= 1:
            return self.integer(value)
        return self._localise(f"{value:.3g}")

    def duration(self, seconds) -> str:
        """Format a duration in seconds as "45 s", "12 min 05 s" or "2 h 03 min"."""
        if not is_number(seconds):
            return MISSING
        total = int(round(seconds))
        if total < 60:
            return self("seconds", seconds=total)
        if total < 3600:
            return self("minutes", minutes=total // 60, seconds=total % 60)
        return self("hours", hours=total // 3600, minutes=(total % 3600) // 60)

    def status(self, status) -> str:
        """Translate a trial status (completed, failed, interrupted, running)."""
        return self.strings.get(f"status_{status}", str(status))


def is_number(value) -> bool:
    """Return whether `value` is a finite int or float (bools and NaN are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value)


LANGUAGES = {
    "en": Language("en", ENGLISH, decimal_mark=".", thousands_mark=","),
    "de": Language("de", GERMAN, decimal_mark=",", thousands_mark="."),
}


def language(code: str) -> Language:
    """Return the `Language` for "en" or "de"."""
    return LANGUAGES[code]
