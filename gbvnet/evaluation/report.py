"""Read evaluations back from MLflow: a side-by-side table of runs, the paper's ablation table, paired comparisons.

    python -m evaluation.report --experiment gbvnet-mahnob-loso                    # every run, side by side
    python -m evaluation.report --experiment gbvnet-mahnob-loso gbvnet-mahnob-segment-random --ablation
    python -m evaluation.report --compare RUN_A RUN_B    # paired test across subjects (ids or id prefixes)
    python -m evaluation.report --experiment gbvnet-deap-loso --format html --output report.html

Runs are the parent runs of ``evaluation.loso`` / ``evaluation.subject_dependent`` (finished ones only). Every
metric is the mean ± sd over subjects of per-subject scores, ``subjects`` is how many were tested (a metric
undefined for a subject is left out; the runs' ``test_<metric>_n`` count who contributed). Every table shows the
baselines computed on the same folds beside the model (those of :data:`gbvnet.evaluation.baselines.BASELINES`: majority
class of the training folds, stratified random, band-power + logistic regression), the one-sided Wilcoxon test of
the model's per-subject accuracy against each, Holm-corrected across them (``p_holm_<baseline>``), and ``beats``:
the baselines beaten at corrected p < 0.05, or ``none``, with a note where too few non-zero pairs make p < 0.05 unreachable. Leaky runs
(``segment-random``) are labelled ``LEAKY`` wherever they appear.

``--ablation`` lays out the paper's ablation table: rows bio / bio on the face windows only / face / face+bio
(one row per fusion kind of :data:`gbvnet.config.FUSIONS`: gated, cross-attention + concat, concat), columns accuracy and the high class's F1 (with n, the subjects behind each) for
valence and arousal. One block per dataset, protocol, set of tested subjects and fold count (clean protocols
first, leaky ones after them), using the latest finished run of each cell, so runs on different subjects never
share a block. Within a block, cells that were trained, validated or tested on different windows (different
``folds_digest``: for example bio on all windows beside face+bio on the face windows) are marked ``[a]``,
``[b]``, ...: compare only cells with the same letter. ``--compare A B`` pairs the two runs' per-subject accuracies (the subjects both
tested), prints the differences, the two-sided Wilcoxon signed-rank test and the rank-biserial effect size, and
logs the comparison as ``comparisons/vs_<B>.json`` on run A.

Protocol-gap runs (``python -m evaluation.gap``) in the experiments get their own tables after the runs table
(:func:`gap_tables`): per protocol the model's accuracy, balanced accuracy and macro-F1 and the baselines'
accuracy on the same folds, then the inflation between neighbouring protocols with its paired test; their three
evaluations are listed in the runs table like any evaluation.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from gbvnet.cli import (
    CommandParser,
    add_output_argument,
    add_tracking_uri_argument,
    exit_on_interrupt,
    one_line_errors,
)
from gbvnet.config import FUSIONS, MODELS
from gbvnet.data.storage import write_text
from gbvnet.evaluation import aggregate
from gbvnet.evaluation.baselines import BASELINES
from gbvnet.evaluation.stats import paired_comparison
from gbvnet.tracking import PARENT_TAG, log_json, tracking_uri

ALPHA = 0.05
SINGLE_MODALITY_ROWS = ((("bio", "", "all"), "bio"), (("bio", "", "face"), "bio (face windows only)"),
                        (("face", "", "face"), "face"))


def modality_rows() -> list[tuple[tuple[str, str, str], str]]:
    """The ablation table's rows: ``((modality, fusion kind, rows), label)``, GBV-Net's single modalities, one
    face+bio row per registered fusion kind (:data:`gbvnet.config.FUSIONS`), then each comparison network of the
    model registry (:data:`gbvnet.config.MODELS`; its modality as ``<model>:<modality>``) on all / face windows."""
    comparisons = [((f"{k.name}:{modality}", "", rows),
                    f"{k.label} ({modality}{', face windows only' if rows == 'face' and modality == 'bio' else ''})")
                   for k in MODELS.values() if k.name != "gbvnet" for modality in k.modalities
                   for rows in (("all", "face") if modality == "bio" else ("face",))]
    return [*SINGLE_MODALITY_ROWS, *((("facebio", k.name, "face"), k.label) for k in FUSIONS.values()), *comparisons]


# The protocol gap (evaluation.gap): each protocol's short name in the gap run's metrics, leakiest first, and the
# neighbouring pairs whose per-subject difference is the inflation (metric ``<a>_minus_<b>_<metric>_<field>``).
GAP_ARMS = {"segment-random": "leaky", "subject-dependent": "trial", "loso": "loso"}
GAP_PAIRS = (("leaky", "trial"), ("trial", "loso"))
GAP_LABELS = {"leaky": "segment-random, LEAKY (windows of a trial in train and test)",
              "trial": "subject-dependent (trials kept apart)", "loso": "LOSO (subjects kept apart)"}
GAP_METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro-F1"))
GAP_FAMILY = f"{len(GAP_PAIRS)} pairs x {len(GAP_METRICS)} metrics, two-sided"  # one Holm family
# each arm's training size per fold (gbvnet.evaluation.gap.training_size): metric <arm>_train_<name>_<min|median|max>
TRAINING_SIZE = {"windows": "training windows", "steps": "optimiser steps",
                 "normalizer_subjects": "subjects in the normaliser"}
GAP_READING = (
    "How to read it: the three rows are one configuration, seed and set of windows, split three ways. "
    "leaky - trial is what recognising a trial from its other windows adds. trial - loso is what knowing the "
    "person adds only where the training sizes are equal (--equal-budget); otherwise the LOSO arm trains on "
    "other people's windows, many more of them, for more optimiser steps, with a normaliser fitted across "
    "people (see the training size table), and trial - loso mixes all of that. The baselines moving with the "
    "protocol show the split, not the model, at work. The p-values "
    "are two-sided paired Wilcoxon tests over subjects (n: subjects with a non-zero difference), r the "
    "rank-biserial effect size; the 6 tests are Holm-corrected as one family (raw p beside). This measures this configuration on this data; it is not a claim about any "
    "paper's code.")


def mean_sd(metrics: dict, name: str, with_n: bool = False) -> str:
    mean, sd, n = metrics.get(f"{name}_mean"), metrics.get(f"{name}_std"), metrics.get(f"{name}_n")
    if mean is None:
        return "-"
    return f"{mean:.3f} ± {sd:.3f}" + (f" (n={int(n)})" if with_n and n is not None else "")


def beaten(m: dict) -> str:
    """The baselines the model beats at Holm-corrected p < 0.05, or ``none``, and those against which too few
    non-zero pairs make p < 0.05 unreachable."""
    if not any(f"vs_{b}_p_holm" in m for b in BASELINES):
        return "-"
    names = [b for b in BASELINES if m.get(f"vs_{b}_p_holm", 1.0) < ALPHA and m[f"vs_{b}_mean_difference"] > 0]
    small = [f"{b} ({int(m[f'vs_{b}_n'])} non-zero pairs)" for b in BASELINES
             if m.get(f"vs_{b}_min_p", 0.0) >= ALPHA]
    return (", ".join(names) or "none") + (f"; p<0.05 out of reach vs {', '.join(small)}" if small else "")


def parent_runs(client: MlflowClient, experiments: list[str]) -> list:
    """Finished evaluation parent runs of ``experiments``, newest first."""
    ids = []
    for name in experiments:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise SystemExit(f"no MLflow experiment named {name!r} at {client.tracking_uri}")
        ids.append(found.experiment_id)
    runs = client.search_runs(ids, f"tags.`{PARENT_TAG}` != '' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=10000)
    return [r for r in runs if "test_accuracy_mean" in r.data.metrics]


def describe(run) -> dict:
    """One row of the runs table: the run's labels, model metrics, baselines and test against the majority."""
    tags, m = run.data.tags, run.data.metrics
    leaky = tags.get("leaky") == "True"
    modality, model = tags.get("modality", "?"), tags.get("model", "gbvnet")  # runs before the registry: GBV-Net
    rows = "face" if modality != "bio" or tags.get("rows") == "face" else "all"
    return {"run_id": run.info.run_id, "run": run.info.run_name, "dataset": tags.get("dataset", "?"),
            "protocol": tags.get("protocol", "?") + (" LEAKY" if leaky else ""), "leaky": leaky,
            "modality": modality, "fusion": tags.get("fusion", "?"), "rows": rows,
            "model": model, "row_key": (modality if model == "gbvnet" else f"{model}:{modality}",
                                        tags.get("fusion", "?") if modality == "facebio" else "", rows),
            "target": tags.get("target", "?"), "folds": int(m.get("n_folds", 0)),
            "subjects": int(m.get("n_subjects", 0)), "tested_subjects": tags.get("tested_subjects", "?"),
            "folds_digest": tags.get("folds_digest"), "configuration": configured(tags),
            "accuracy": mean_sd(m, "test_accuracy"), "f1_high": mean_sd(m, "test_f1"),
            "accuracy_n": mean_sd(m, "test_accuracy", with_n=True), "f1_n": mean_sd(m, "test_f1", with_n=True),
            "balanced_accuracy": mean_sd(m, "test_balanced_accuracy"),
            **{f"{b}_accuracy": mean_sd(m, f"baseline_{b}_test_accuracy") for b in BASELINES},
            **{f"p_holm_{b}": "-" if f"vs_{b}_p_holm" not in m else f"{m[f'vs_{b}_p_holm']:.3g}"
               for b in BASELINES},
            "beats": beaten(m), "one_class_folds": one_class_folds(m),
            "n_one_class_folds": int(m.get("n_one_class_folds", 0)), "fold_failures": fold_failures(tags)}


def fold_failures(tags: dict) -> str:
    """A nested run's folds that were not tested (their training failed with every configuration tried) and those
    trained with a next-best configuration after the best one failed; ``-`` when none."""
    parts = [f"{label}: {tags[tag]}" for tag, label in (("untested_folds", "untested"), ("retried_folds", "retried"))
             if tags.get(tag, "none") != "none"]
    return "; ".join(parts) or "-"


def configured(tags: dict) -> str:
    """How a run's model was configured (tag ``configuration``: :func:`gbvnet.evaluation.engine.configuration`, a nested
    search's, with its training budget and seeds where the gap or ``--seeds`` set them); runs logged before it
    was recorded say what is known."""
    text = tags.get("configuration") or ("nested search" if tags.get("nested") == "true" else "not recorded")
    for tag, label in (("budget", "budget"), ("seeds", "seeds")):
        if tags.get(tag):
            text += f", {label} {tags[tag]}"
    return text


def run_columns() -> list[str]:
    """The runs table's columns: the run, the model's scores, then each registered baseline's accuracy and the
    Holm-corrected p of the model against it (:data:`gbvnet.evaluation.baselines.BASELINES`)."""
    return ["run_id", "dataset", "protocol", "modality", "fusion", "target", "configuration", "folds", "subjects",
            "accuracy", "f1_high",
            "balanced_accuracy", *(f"{b}_accuracy" for b in BASELINES), *(f"p_holm_{b}" for b in BASELINES),
            "beats", "one_class_folds", "fold_failures"]


def runs_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    columns = run_columns()
    return columns, [[str(r[c])[:8] if c == "run_id" else str(r[c]) for c in columns] for r in rows]


def ablation_tables(rows: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per (dataset, protocol, tested subjects, folds), clean protocols first: one row per model variant, columns
    valence and arousal accuracy and F1 with n; cells on different windows marked (see the module docstring)."""
    blocks: dict[tuple, dict] = {}
    for r in rows:  # newest first: keep the first seen per cell
        key = (r["dataset"], r["protocol"], r["tested_subjects"], r["folds"])
        blocks.setdefault(key, {}).setdefault((r["row_key"], r["target"]), r)
    header = ["model", "valence accuracy", "valence F1 (high class)", "arousal accuracy", "arousal F1 (high class)",
              "majority baseline (valence / arousal)"]
    out = []
    for (dataset, protocol, tested, folds), cells in sorted(blocks.items(),
                                                            key=lambda kv: ("LEAKY" in kv[0][1], kv[0])):
        kinds = list(dict.fromkeys((r["folds_digest"], r["configuration"]) for r in cells.values()))
        letters = {d: (f" [{chr(ord('a') + i)}]" if d[0] else " [?]") if len(kinds) > 1 else ""
                   for i, d in enumerate(kinds)}
        body = []
        for key, label in modality_rows():
            pair = {t: cells.get((key, t)) for t in ("valence", "arousal")}
            if not any(pair.values()):
                continue
            line = [label]
            for t in ("valence", "arousal"):
                line += [pair[t]["accuracy_n"] + letters[pair[t]["folds_digest"], pair[t]["configuration"]]
                         + cell_marks(pair[t]),
                         pair[t]["f1_n"]] if pair[t] else ["-", "-"]
            line.append(" / ".join(pair[t]["majority_accuracy"] if pair[t] else "-" for t in ("valence", "arousal")))
            body.append(line)
        title = f"{protocol} on {dataset}: subjects {tested}, {folds} folds"
        configurations = list(dict.fromkeys(c for _, c in kinds))
        if len(configurations) == 1:
            title += f", {configurations[0]}"
        if len(kinds) > 1:
            title += (" (cells marked with different letters were trained, validated or tested on different "
                      "windows, or configured differently: compare only cells with the same letter; "
                      + "; ".join(f"{letters[k].strip()} {k[1]}" for k in kinds) + ")")
        out.append((title, header, body))
    return out


def run_warning(row: dict) -> str | None:
    """The report's opening warning for a run (:func:`describe`) whose model predicted one class in most folds."""
    line = aggregate.degenerate_line({"n_folds": row["folds"], "n_one_class_folds": row["n_one_class_folds"]})
    return line and f"run {row['run_id'][:8]}: {line}"


def cell_marks(row: dict) -> str:
    """An ablation cell's flags: folds that predicted a single class for every test window, folds untested or
    retried."""
    mark = f" {{one class in {row['n_one_class_folds']} of {row['folds']} folds}}" if row["n_one_class_folds"] else ""
    return mark + (f" {{{row['fold_failures']}}}" if row["fold_failures"] != "-" else "")


def gap_title(d: dict) -> str:
    """The heading of a gap's tables, from its ``--output`` document or its run's params and tags."""
    return (f"protocol gap on {d['dataset']}: {d['modality']} ({d['fusion']}), target {d['target']}, seed {d['seed']}, "
            f"k={d['k']}, LOSO validation on {d['validation']}, subjects {d['subjects']}, training budget "
            f"{d.get('budget') or 'not recorded'}")


def one_class_folds(m: dict, prefix: str = "") -> str:
    """``k of n``: the folds whose model predicted a single class for every test window (metrics ``m``, keys
    after ``prefix``), ``MOST`` marked; ``-`` for runs logged before they were counted."""
    if f"{prefix}n_one_class_folds" not in m:
        return "-"
    n, total = int(m[f"{prefix}n_one_class_folds"]), int(m[f"{prefix}n_folds"])
    return f"{n} of {total}" + (" (MOST: nothing learnt)" if 2 * n > total else "")


def gap_warnings(m: dict) -> list[str]:
    """The lines a gap's output starts with: one per arm whose model predicted one class in most folds."""
    lines = []
    for protocol, a in GAP_ARMS.items():
        if f"{a}_n_one_class_folds" in m:
            counts = {"n_folds": m[f"{a}_n_folds"], "n_one_class_folds": m[f"{a}_n_one_class_folds"]}
            lines += [line for line in (aggregate.degenerate_line(counts, f"the {protocol} arm's model"),) if line]
    return lines


def size(m: dict, name: str) -> str:
    """``median (min-max)`` of a training size over an arm's folds, or ``median`` when all equal."""
    low, mid, high = (int(m[f"{name}_{stat}"]) for stat in ("min", "median", "max"))
    return f"{mid}" if low == high else f"{mid} ({low}-{high})"


def gap_tables(m: dict, title: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """A gap run's tables from its metrics ``m`` (:func:`gbvnet.evaluation.gap.flat_metrics`): per protocol the model's
    scores and the baselines' accuracy (mean ± sd over subjects), then the inflation with its paired tests."""
    baselines = [b for b in BASELINES if f"loso_baseline_{b}_test_accuracy_mean" in m]
    header = ["protocol", *(label for _, label in GAP_METRICS), *(f"{b} accuracy" for b in baselines), "subjects",
              "one-class folds"]
    body = [[GAP_LABELS[a], *(mean_sd(m, f"{a}_test_{name}") for name, _ in GAP_METRICS),
             *(mean_sd(m, f"{a}_baseline_{b}_test_accuracy") for b in baselines),
             str(int(m.get(f"{a}_test_accuracy_n", 0))), one_class_folds(m, f"{a}_")] for a in GAP_ARMS.values()]
    tests = []
    for a, b in GAP_PAIRS:
        for name, label in GAP_METRICS:
            key = f"{a}_minus_{b}_{name}"
            if f"{key}_p_value" not in m:
                continue
            unreachable = m[f"{key}_min_p"] >= ALPHA
            tests.append([f"{a} - {b}", label, f"{m[f'{key}_mean_difference']:+.3f}",
                          f"{int(m[f'{key}_n'])} of {int(m[f'{key}_n_subjects'])}", f"{m[f'{key}_p_value']:.3g}",
                          f"{m[f'{key}_p_holm']:.3g}", f"{m[f'{key}_effect_size']:+.2f}",
                          "p<0.05 out of reach with so few pairs" if unreachable else ""])
    sizes = [[GAP_LABELS[a], *(size(m, f"{a}_train_{name}") for name in TRAINING_SIZE)]
             for a in GAP_ARMS.values() if f"{a}_train_windows_median" in m]
    return [(f"{title} (mean ± sd over subjects)", header, body),
            *([("training size per fold (median, min-max over folds)", ["protocol", *TRAINING_SIZE.values()],
                sizes)] if sizes else []),
            (f"inflation: per-subject difference, paired over subjects (two-sided Wilcoxon signed-rank; Holm over "
             f"{len(tests)} tests: {GAP_FAMILY})",
             ["difference", "metric", "mean", "non-zero pairs of subjects", "p (raw)", "p (Holm)", "effect size r",
              "note"], tests)]


def gap_runs(client: MlflowClient, experiments: list[str]
             ) -> tuple[list[tuple[str, list[str], list[list[str]]]], list[str]]:
    """The tables of every finished gap run in ``experiments`` (newest first), and the warnings of those whose
    model predicted one class in most folds of an arm."""
    ids = [e.experiment_id for e in map(client.get_experiment_by_name, experiments) if e is not None]
    runs = client.search_runs(ids, "tags.kind = 'gap' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1000) if ids else []
    tables, warnings = [], []
    for run in runs:
        params, tags = run.data.params, run.data.tags
        title = gap_title({**tags, "seed": params.get("seed"), "k": params.get("k"),
                           "validation": params.get("validation"), "subjects": tags.get("tested_subjects")})
        tables += gap_tables(run.data.metrics, f"{title}, run {run.info.run_id[:8]}")
        warnings += [f"gap run {run.info.run_id[:8]}: {line}" for line in gap_warnings(run.data.metrics)]
    return tables, warnings


def resolve_runs(client: MlflowClient, *refs: str) -> list[str]:
    """The full ids of the evaluation parent runs whose ids start with ``refs`` (the tables show 8 characters)."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{PARENT_TAG}` != ''", max_results=50000) if experiments else []
    ids = sorted({r.info.run_id for r in runs})
    resolved = []
    for ref in refs:
        matches = [i for i in ids if i.startswith(ref.lower())]
        if len(matches) != 1:
            raise SystemExit(f"{'no' if not matches else 'more than one'} evaluation run whose id starts with "
                             f"{ref!r} at {client.tracking_uri}" + (f": {matches}" if matches else ""))
        resolved.append(matches[0])
    return resolved


def compare(client: MlflowClient, run_a: str, run_b: str, metric: str = "accuracy") -> dict:
    """Paired comparison of two runs (ids or unique id prefixes) over the subjects both tested; logged on run A."""
    run_a, run_b = resolve_runs(client, run_a, run_b)  # one search for both
    scores = []
    for run_id in (run_a, run_b):
        with tempfile.TemporaryDirectory() as d:
            path = client.download_artifacts(run_id, "per_subject.json", d)
            scores.append({row["subject"]: row[metric] for row in json.loads(Path(path).read_text())})
    result = {"run_a": run_a, "run_b": run_b, "metric": metric, **paired_comparison(*scores)}
    result["per_subject"] = [{"subject": s, "a": scores[0][s], "b": scores[1][s], "difference": d}
                             for s, d in zip(result["subjects"], result["differences"], strict=True)]
    log_json(client, run_a, result, f"comparisons/vs_{run_b}.json")
    return result


def comparison_tables(result: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    per_subject = [[str(r["subject"]), f"{r['a']:.3f}", f"{r['b']:.3f}", f"{r['difference']:+.3f}"]
                   for r in result["per_subject"]]
    verdict = ("A better" if result["mean_difference"] > 0 else "B better") if result["p_value"] < 0.05 \
        else "no significant difference"
    if result.get("warning"):
        verdict += f" ({result['warning']})"
    summary = [[f"{result['n']} of {result['n_subjects']}", f"{result['mean_difference']:+.3f}",
                f"{result['wilcoxon_statistic']:.1f}", f"{result['p_value']:.3g}", f"{result['effect_size']:+.2f}",
                verdict]]
    return [(f"per-subject {result['metric']}: A={result['run_a'][:8]} vs B={result['run_b'][:8]}",
             ["subject", "A", "B", "A - B"], per_subject),
            ("paired test (two-sided Wilcoxon signed-rank, matched-pairs rank-biserial effect size; one test, so no "
             "multiple-test correction)",
             ["non-zero pairs of subjects", "mean difference", "W", "p", "effect size r", "at p < 0.05"], summary)]


def render(tables: list[tuple[str, list[str], list[list[str]]]], fmt: str, notes: list[str] = ()) -> str:
    """Markdown (pipe tables) or a self-contained HTML page; ``notes`` (warnings) come first."""
    if fmt == "md":
        parts = [f"**{note}**" for note in notes]
        for title, header, body in tables:
            lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n"
    parts = ["<!doctype html><meta charset='utf-8'><title>gbvnet report</title>",
             "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}</style>",
             *(f"<p><strong>{html.escape(note)}</strong></p>" for note in notes)]
    for title, header, body in tables:
        parts.append(f"<h3>{html.escape(title)}</h3><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
        parts.append("</table>")
    return "\n".join(parts) + "\n"


# The benchmark's document (evaluation.benchmark) as tables
METRICS = ("accuracy", "f1", "macro_f1", "balanced_accuracy")
METRIC_LABELS = {"accuracy": "accuracy", "f1": "F1 (high class)", "macro_f1": "macro-F1",
                 "balanced_accuracy": "balanced accuracy"}
BASELINE_LABELS = {"majority": "majority baseline", "stratified": "stratified baseline",
                   "bandpower_logreg": "band-power + logistic regression"}


def _cell(agg: dict, metric: str) -> str:
    mean, sd = agg[f"test_{metric}_mean"], agg[f"test_{metric}_std"]
    return "undefined" if math.isnan(mean) else f"{mean:.3f} ± {sd:.3f}"


def benchmark_tables(document: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The benchmark's tables: per model (and baseline) mean ± sd over subjects, the tests against the reference,
    and the per-subject scores."""
    models, reference, metric = document["models"], document["reference"], document["metric"]
    any_doc = next(iter(models.values()))
    title = (f"benchmark on {document['dataset']}: {document['protocol']}"
             + (" [LEAKY: windows of a trial in train and test]" if document["leaky"] else "")
             + f", target {document['target']}, seed {document['seed']}, {len(document['subjects'])} subjects "
             f"({' '.join(map(str, document['subjects']))}), rows: {document['rows']}"
             + ("" if not document.get("search") else
                f", every model tuned in every outer fold by a nested search of {document['search']['trials']} "
                f"trials (space {document['search']['space']}, one evaluation per model in turn)")
             + " (mean ± sd over subjects)")
    header = ["model", *(METRIC_LABELS[m] for m in METRICS), "one-class folds"]
    body = [[document["titles"][label], *(_cell(doc["aggregate"], m) for m in METRICS),
             f"{doc['aggregate']['n_one_class_folds']} of {doc['aggregate']['n_folds']}"]
            for label, doc in models.items()]
    body += [[BASELINE_LABELS.get(name, name), *(_cell(b["aggregate"], m) for m in METRICS), "-"]
             for name, b in any_doc["baselines"].items()]
    out = [(title, header, body)]
    comparisons = document["comparisons"]
    if comparisons:
        family = next(iter(comparisons.values())).get("family", "")
        out.append((f"{reference} better than each model? ({family}; raw p beside)",
                    ["model", f"mean difference in {METRIC_LABELS[metric]}", "non-zero pairs of subjects",
                     "p (raw)", "p (Holm)", "effect size r", "verdict"],
                    [[document["titles"][label], f"{t['mean_difference']:+.3f}", f"{t['n']} of {t['n_subjects']}",
                      f"{t['p_value']:.3g}", f"{t['p_holm']:.3g}", f"{t['effect_size']:+.2f}",
                      "better at p<0.05" if t["p_holm"] < 0.05 and t["mean_difference"] > 0 else
                      ("p<0.05 out of reach" if t["warning"] else "not shown better")]
                     for label, t in comparisons.items()]))
    scores = {label: aggregate.per_subject_scores(doc, metric) for label, doc in models.items()}
    scores |= {name: aggregate.per_subject_scores(b, metric) for name, b in any_doc["baselines"].items()}
    out.append((f"per-subject {METRIC_LABELS[metric]}", ["subject", *scores],
                [[str(s), *(f"{scores[k].get(s, float('nan')):.3f}" for k in scores)] for s in document["subjects"]]))
    return out


def format_benchmark(document: dict, fmt: str = "md") -> str:
    """What ``evaluation.benchmark`` (and ``evaluation.report --benchmark``, also as ``fmt="html"``) prints: its warnings
    (models that predicted one class in most folds), the tables, the MLflow run."""
    notes = [line for label, doc in document["models"].items()
             if (line := aggregate.degenerate_line(doc["aggregate"], f"model {label}"))]
    where = (f"MLflow run {document['mlflow_run_id']} in experiment {document['mlflow_experiment']!r} (each model's "
             "evaluation is a child run)")
    return render(benchmark_tables(document), fmt, [*notes, where] if fmt == "html" else notes).rstrip() + (
        "\n\n" + where if fmt == "md" else "")


def benchmark_runs(client: MlflowClient, experiments: list[str], fmt: str) -> list[str]:
    """Every finished benchmark run of ``experiments`` (newest first) laid out as ``evaluation.benchmark`` printed
    it (its ``benchmark.json``)."""

    ids = [e.experiment_id for e in map(client.get_experiment_by_name, experiments) if e is not None]
    runs = client.search_runs(ids, "tags.kind = 'benchmark' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1000) if ids else []
    texts = []
    for run in runs:
        with tempfile.TemporaryDirectory() as d:
            document = json.loads(Path(client.download_artifacts(run.info.run_id, "benchmark.json", d)).read_text())
        texts.append(format_benchmark(document, fmt))
    return texts


def build(args: argparse.Namespace) -> str:
    client = MlflowClient(tracking_uri(args.tracking_uri))
    if args.compare:
        return render(comparison_tables(compare(client, *args.compare)), args.format)
    if args.benchmark:
        texts = benchmark_runs(client, args.experiment, args.format)
        if not texts:
            raise SystemExit(f"no finished benchmark runs in {args.experiment}")
        return "\n\n".join(texts) + "\n"
    rows = [describe(r) for r in parent_runs(client, args.experiment)]
    if not rows:
        raise SystemExit(f"no finished evaluation runs in {args.experiment}")
    tables = ablation_tables(rows) if args.ablation else \
        [(f"runs in {', '.join(args.experiment)} (test metrics: mean ± sd over subjects; p_holm_<baseline>: per "
          f"run, Holm over {len(BASELINES)} tests: model vs {len(BASELINES)} baselines, one-sided, per-subject "
          "accuracy)", *runs_table(rows))]
    gaps, gap_notes = gap_runs(client, args.experiment)
    return render(tables + gaps, args.format, [note for note in map(run_warning, rows) if note] + gap_notes)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m evaluation.report``."""
    p = CommandParser(prog="python -m evaluation.report", description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--experiment", nargs="+", help="MLflow experiment name(s), e.g. gbvnet-mahnob-loso")
    what.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="paired test of two runs")
    p.add_argument("--ablation", action="store_true", help="the paper's ablation layout (with --experiment)")
    p.add_argument("--benchmark", action="store_true",
                   help="the finished benchmarks of --experiment (e.g. gbvnet-deap-benchmark) as "
                        "python -m evaluation.benchmark printed them")
    p.add_argument("--format", choices=("md", "html"), default="md",
                   help="md: Markdown pipe tables (default); html: a self-contained page")
    add_output_argument(p, "the report's file (default: printed)")
    add_tracking_uri_argument(p)
    return p


def main(argv: list[str] | None = None) -> str:
    with one_line_errors(), exit_on_interrupt(note="run the command again"):
        args = build_parser().parse_args(argv)
        text = build(args)
        if args.output:
            write_text(args.output, text)
            print(f"wrote {args.output}")
        else:
            sys.stdout.write(text)
        return text


if __name__ == "__main__":
    main()
