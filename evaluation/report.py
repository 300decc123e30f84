"""Read evaluations back from MLflow: a side-by-side table of runs, the paper's ablation table, paired comparisons.

    python -m evaluation.report --experiment gbvnet-mahnob-loso                    # every run, side by side
    python -m evaluation.report --experiment gbvnet-mahnob-loso gbvnet-mahnob-segment-random --ablation
    python -m evaluation.report --compare RUN_A RUN_B    # paired test across subjects (ids or id prefixes)
    python -m evaluation.report --experiment gbvnet-deap-loso --format html --output report.html

Runs are the parent runs of ``evaluation.loso`` / ``evaluation.subject_dependent`` (finished ones only). Every
table shows the baselines computed on the same folds beside the model (majority class of the training folds,
stratified random, band-power + logistic regression) and the one-sided Wilcoxon test of the model's per-subject
accuracy against the majority baseline (``p < 0.05`` is marked ``yes``). Leaky runs (``segment-random``) are
labelled ``LEAKY`` wherever they appear.

``--ablation`` lays out the paper's ablation table: rows bio / face / face+bio (gated, concat), columns accuracy
and F1 for valence and arousal, one block per protocol (clean protocols first, leaky ones after them), using the
latest finished run of each cell. ``--compare A B`` pairs the two runs' per-subject accuracies (the subjects both
tested), prints the differences, the two-sided Wilcoxon signed-rank test and the rank-biserial effect size, and
logs the comparison as ``comparisons/vs_<B>.json`` on run A.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from evaluation.stats import paired_comparison
from evaluation.tracking import PARENT_TAG, log_json, tracking_uri
from gbvnet.data.cache import write_text

BASELINES = ("majority", "stratified", "bandpower_logreg")
MODALITY_ROWS = (("bio", "gated", "bio"), ("face", "gated", "face"), ("facebio", "gated", "face+bio (gated)"),
                 ("facebio", "concat", "face+bio (concat)"))


def mean_sd(metrics: dict, name: str) -> str:
    mean, sd = metrics.get(f"{name}_mean"), metrics.get(f"{name}_std")
    return "-" if mean is None else f"{mean:.3f} ± {sd:.3f}"


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
    p = m.get("vs_majority_p_value")
    return {"run_id": run.info.run_id, "run": run.info.run_name,
            "protocol": tags.get("protocol", "?") + (" LEAKY" if leaky else ""), "leaky": leaky,
            "modality": tags.get("modality", "?"), "fusion": tags.get("fusion", "?"),
            "target": tags.get("target", "?"), "folds": int(m.get("n_folds", 0)),
            "accuracy": mean_sd(m, "test_accuracy"), "f1": mean_sd(m, "test_f1"),
            "balanced_accuracy": mean_sd(m, "test_balanced_accuracy"),
            **{f"{b}_accuracy": mean_sd(m, f"baseline_{b}_test_accuracy") for b in BASELINES},
            "p_vs_majority": "-" if p is None else f"{p:.3g}",
            "beats_majority": "-" if p is None else ("yes" if p < 0.05 and m["vs_majority_mean_difference"] > 0
                                                     else "no")}


RUN_COLUMNS = ("run_id", "protocol", "modality", "fusion", "target", "folds", "accuracy", "f1", "balanced_accuracy",
               "majority_accuracy", "stratified_accuracy", "bandpower_logreg_accuracy", "p_vs_majority",
               "beats_majority")


def runs_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    return list(RUN_COLUMNS), [[str(r[c])[:8] if c == "run_id" else str(r[c]) for c in RUN_COLUMNS] for r in rows]


def ablation_tables(rows: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per protocol (clean first): rows bio / face / face+bio, columns valence and arousal accuracy and F1."""
    latest: dict[tuple, dict] = {}
    for r in rows:  # newest first: keep the first seen per cell
        latest.setdefault((r["protocol"], r["modality"], r["fusion"], r["target"]), r)
    protocols = sorted({r["protocol"] for r in rows}, key=lambda p: ("LEAKY" in p, p))
    header = ["model", "valence accuracy", "valence F1", "arousal accuracy", "arousal F1",
              "majority baseline (valence / arousal)"]
    out = []
    for protocol in protocols:
        body = []
        for modality, fusion, label in MODALITY_ROWS:
            cells = {t: latest.get((protocol, modality, fusion, t)) for t in ("valence", "arousal")}
            if not any(cells.values()):
                continue
            line = [label]
            for t in ("valence", "arousal"):
                line += [cells[t]["accuracy"], cells[t]["f1"]] if cells[t] else ["-", "-"]
            line.append(" / ".join(cells[t]["majority_accuracy"] if cells[t] else "-" for t in ("valence", "arousal")))
            body.append(line)
        out.append((protocol, header, body))
    return out


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
    summary = [[str(result["n"]), f"{result['mean_difference']:+.3f}", f"{result['wilcoxon_statistic']:.1f}",
                f"{result['p_value']:.3g}", f"{result['effect_size']:+.2f}", verdict]]
    return [(f"per-subject {result['metric']}: A={result['run_a'][:8]} vs B={result['run_b'][:8]}",
             ["subject", "A", "B", "A - B"], per_subject),
            ("paired test (two-sided Wilcoxon signed-rank, matched-pairs rank-biserial effect size)",
             ["subjects", "mean difference", "W", "p", "effect size r", "at p < 0.05"], summary)]


def render(tables: list[tuple[str, list[str], list[list[str]]]], fmt: str) -> str:
    """Markdown (pipe tables) or a self-contained HTML page."""
    if fmt == "md":
        parts = []
        for title, header, body in tables:
            lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n"
    parts = ["<!doctype html><meta charset='utf-8'><title>gbvnet report</title>",
             "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}</style>"]
    for title, header, body in tables:
        parts.append(f"<h3>{html.escape(title)}</h3><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def build(args: argparse.Namespace) -> str:
    client = MlflowClient(tracking_uri(args.tracking_uri))
    if args.compare:
        return render(comparison_tables(compare(client, *args.compare)), args.format)
    rows = [describe(r) for r in parent_runs(client, args.experiment)]
    if not rows:
        raise SystemExit(f"no finished evaluation runs in {args.experiment}")
    tables = ablation_tables(rows) if args.ablation else \
        [(f"runs in {', '.join(args.experiment)} (test metrics: mean ± sd over folds)", *runs_table(rows))]
    return render(tables, args.format)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--experiment", nargs="+", help="MLflow experiment name(s), e.g. gbvnet-mahnob-loso")
    what.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="paired test of two runs")
    p.add_argument("--ablation", action="store_true", help="the paper's ablation layout (with --experiment)")
    p.add_argument("--format", choices=("md", "html"), default="md")
    p.add_argument("--output", help="write the report here instead of printing it")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite runs/mlflow.db)")
    args = p.parse_args(argv)
    text = build(args)
    if args.output:
        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return text


if __name__ == "__main__":
    main()
