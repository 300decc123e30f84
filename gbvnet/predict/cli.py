"""``python -m gbvnet.predict``: a logged model (:mod:`gbvnet.predict.export`) applied to a recording it has not seen.

    python -m gbvnet.predict --model-uri models:/gbvnet-deap-valence@champion --dataset deap --root NEW [--subjects 5]
    python -m gbvnet.predict --model-uri models:/gbvnet-deap-valence@champion --cache DIR    # prepared already
    [--output predictions] [--format csv|parquet] [--batch-size 256] [--device cpu|cuda] [--tracking-uri URI]

``--root``: the recording is read by the dataset's reader and prepared exactly as the model's training data was
(the model's preparation config: window, stride, rate, filters, baseline normalisation, face frames and size,
label threshold) into ``--cache`` when given (incrementally, as every ``--root``) or else a temporary folder.
``--cache`` alone: a cache prepared already, which must have been prepared with the model's options. The model
then reads every window of the subjects asked for (default: all; a face model the windows with face frames) in
batches on the device, and the command writes

* ``<output>/windows.<format>``: per window ``subject, trial, window, t_start, p_high`` (the probability of a
  high rating of the model's target) and ``high`` (``p_high > 0.5``);
* ``<output>/trials.<format>``: per trial ``windows``, ``p_high`` (the mean over its windows), ``high_share``
  (the share of its windows predicted high), ``majority`` (most windows high; a tie goes to the mean) and
  ``mean`` (``p_high > 0.5``);

both with ``rating``, ``label`` (rating above the model's threshold) and ``correct`` where the recording has
ratings, and prints one summary line (with the accuracy when there are ratings: a held-out test of the model)
and the time preparation and prediction took.

Refused with one line each, before anything is predicted (:class:`~gbvnet.predict.export.ModelMismatch`): a model URI
that does not exist; a model logged by another gbvnet model format; a recording whose bio channels are not the
model's (names and order) or whose sampling rate is below the model's (its windows would be upsampled); a face
model on a recording or cache without face video; a cache prepared with other options than the model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException

from gbvnet.cli import (
    CommandParser,
    add_cache_argument,
    add_dataset_argument,
    add_output_argument,
    add_root_argument,
    add_subjects_argument,
    add_tracking_uri_argument,
    exit_on_interrupt,
    hidden_alias,
    one_line_errors,
)
from gbvnet.config import PrepareConfig
from gbvnet.data.cache import Cache, open_cache
from gbvnet.data.loader import BatchLoader
from gbvnet.data.registry import get_dataset
from gbvnet.data.storage import absolute
from gbvnet.data.window_dataset import WindowDataset
from gbvnet.folds.protocols import usable_rows
from gbvnet.predict.export import GBVNetModel, ModelMismatch, ModelSpec, mlflow_store
from gbvnet.prepare.options import FACE_OPTIONS
from gbvnet.prepare.plan import prepare_dataset
from gbvnet.tracking import limit_http_requests, tracking_uri

FORMATS = ("csv", "parquet")


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m gbvnet.predict``."""
    p = CommandParser(prog="python -m gbvnet.predict", description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)  # --model-uri, or its old spelling
    which.add_argument("--model-uri",
                       help="the logged model: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/model or a folder")
    hidden_alias(which, "--model", "model_uri")  # --model names a network in the other commands
    g = p.add_argument_group("the recording", "--root (with --dataset): a recording, prepared as the model needs "
                                              "into --cache, or a temporary cache without it; --cache alone: a "
                                              "cache prepared with the model's options")
    add_dataset_argument(g, required=False)
    add_root_argument(g)
    add_cache_argument(g)
    add_subjects_argument(g)
    o = p.add_argument_group("output")
    add_output_argument(o, "a folder of windows.<format> and trials.<format>", default="predictions")
    o.add_argument("--format", choices=FORMATS, default="csv", help="csv (default) or parquet")
    c = p.add_argument_group("compute")
    c.add_argument("--batch-size", type=int, default=256, help="windows per forward pass (default 256)")
    c.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda where available)")
    add_tracking_uri_argument(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.root and not args.dataset:
        p.error("--root needs --dataset (which reader reads it)")
    if not args.root and not args.cache:
        p.error("give --dataset and --root (a recording), or --cache (a prepared window cache)")
    return args


# --------------------------------------------------------------------------------------------------- the model
def load_model(uri: str, store: str, device: str | None = None) -> GBVNetModel:
    """The gbvnet model at ``uri`` (resolved in the MLflow store ``store``) on ``device``; a URI that names no
    model is a one-line ``ValueError``, a model of another format a :class:`ModelMismatch`."""
    limit_http_requests()
    with mlflow_store(store):
        try:
            # MLflow's check of the model's pinned requirements against this environment scans every installed
            # package (seconds); the model's format version is what decides whether gbvnet can apply it
            model = mlflow.pyfunc.load_model(uri, suppress_warnings=True,
                                             model_config={"device": device} if device else None)
        except (MlflowException, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"--model-uri {uri}: no such model in MLflow at {store} ({reason}); check the name, "
                             "alias or version (mlflow ui: Models) and --tracking-uri") from None
    python_model = model.unwrap_python_model()
    if not isinstance(python_model, GBVNetModel):
        raise ModelMismatch(f"--model-uri {uri}: not a model logged by gbvnet ({type(python_model).__name__})")
    return python_model


# --------------------------------------------------------------------------------------------------- checks
def check_channels(spec: ModelSpec, channels: list[str], where: str) -> None:
    """Refuse bio channels other than the model's training cache's (names and order)."""
    if spec.modality == "face" or list(channels) == spec.channels:
        return
    missing = [c for c in spec.channels if c not in channels]
    extra = [c for c in channels if c not in spec.channels]
    parts = [f"lacks {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}" if missing else "",
             f"has {', '.join(extra[:6])}{' ...' if len(extra) > 6 else ''} besides" if extra else ""]
    what = "; ".join(part for part in parts if part) or "has them in another order"
    reads = spec.model.get("channels") or spec.channels
    raise ModelMismatch(f"{where}: its channels are not the model's: it {what} (the model takes the "
                        f"{len(spec.channels)} channels of its {spec.dataset} training data in their order, and reads "
                        f"{'all' if len(reads) == len(spec.channels) else len(reads)} of them)")


def check_recording(spec: ModelSpec, dataset: str, root: str, subject: int, cfg: PrepareConfig) -> None:
    """Read ``subject`` of the recording and refuse it when its channels are not the model's or its sampling rate is
    below the model's (preparation would upsample it)."""
    reader = get_dataset(dataset).reader
    reader.check_root(root)
    record = reader.read_subject(root, subject, face=False, **cfg.reader)[0]
    where = f"{root} (subject {subject})"
    check_channels(spec, record.channels, where)
    if spec.modality != "face" and record.sfreq < cfg.rate - 1e-6:
        raise ModelMismatch(f"{where}: sampled at {record.sfreq:g} Hz, below the {cfg.rate:g} Hz the model was "
                            f"trained at: its windows would be upsampled (nothing above {record.sfreq / 2:g} Hz); "
                            f"use a recording at {cfg.rate:g} Hz or more, or a model trained at {record.sfreq:g} Hz")


def check_cache(spec: ModelSpec, cache: Cache) -> None:
    """Refuse a cache whose channels or preparation options (those the model's inputs depend on: the face options
    only for a face model; not the reader's) are not the model's, or without faces for a face model."""
    check_channels(spec, cache.manifest.channels, f"cache {cache.uri}")
    model, held = spec.prepare_config(), cache.manifest.config
    names = [f.name for f in dataclasses.fields(PrepareConfig)
             if f.name != "reader" and (spec.modality != "bio" or f.name not in FACE_OPTIONS)]
    differ = [n for n in names if getattr(model, n) != getattr(held, n)]
    if differ:
        def shown(cfg: PrepareConfig) -> str:
            return ", ".join(f"{n}={getattr(cfg, n)}" for n in differ)

        raise ModelMismatch(f"cache {cache.uri}: prepared with {shown(held)}; the model was trained on "
                            f"{shown(model)}: predict from the recording (--dataset D --root ROOT prepares it with "
                            "the model's options) or into another --cache")
    if spec.modality != "bio" and not cache.index().has_face:
        raise ModelMismatch(f"cache {cache.uri}: no face video (prepared with --no-face, or the recording has no "
                            f"videos); the model ({spec.modality}) needs faces")


# --------------------------------------------------------------------------------------------------- the cache
def recording_config(spec: ModelSpec, dataset: str) -> PrepareConfig:
    """The model's preparation config for a recording of ``dataset``: the model's, with that dataset's reader
    options (their defaults where the model was trained on another dataset)."""
    cfg = spec.prepare_config()
    if dataset == spec.dataset:
        return cfg
    return get_dataset(dataset).prepare_config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                                                  if f.name != "reader"})


def prepared(spec: ModelSpec, args: argparse.Namespace, folder: str) -> Cache:
    """The window cache to predict on: ``--root`` checked and prepared with the model's options (into ``--cache``,
    else ``folder``), or ``--cache`` as it is; checked against the model either way."""
    if args.root:
        cfg = recording_config(spec, args.dataset)
        reader = get_dataset(args.dataset).reader
        subjects = args.subjects or sorted(reader.subject_files(args.root, False, **cfg.reader))
        if not subjects:
            raise ModelMismatch(f"{args.root}: no {args.dataset} subject found")
        check_recording(spec, args.dataset, args.root, subjects[0], cfg)
        prepare_dataset(args.dataset, args.root, args.cache or folder, cfg, face=spec.modality != "bio",
                        subjects=args.subjects, progress=False)
    cache = open_cache(absolute(args.cache) if args.cache else folder)
    check_cache(spec, cache)
    return cache


def rows_to_predict(spec: ModelSpec, cache: Cache, subjects: list[int] | None) -> np.ndarray:
    """The cache rows of ``subjects`` (default: all) that the model reads; a subject the cache lacks, or without
    face frames for a face model, is refused."""
    index = cache.index()
    rows = usable_rows(index, spec.modality)
    wanted = subjects or sorted(np.unique(index.subject).tolist())
    unknown = sorted(set(wanted) - set(index.subject.tolist()))
    if unknown:
        raise ValueError(f"cache {cache.uri}: no subject(s) {unknown} (it has {sorted(set(index.subject.tolist()))})")
    faceless = sorted(set(wanted) - set(index.subject[rows].tolist()))
    if faceless:
        raise ModelMismatch(f"cache {cache.uri}: subject(s) {faceless} have no face video; the model "
                            f"({spec.modality}) needs faces: leave them out (--subjects)")
    return rows[np.isin(index.subject[rows], wanted)]


# --------------------------------------------------------------------------------------------------- predict
def probabilities(model: GBVNetModel, cache: Cache, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """P(high rating) of each of ``rows``, in batches of ``batch_size`` read ahead onto the model's device."""
    ds = WindowDataset(cache, target=model.spec.target, modality=model.spec.modality)
    where = {int(r): i for i, r in enumerate(rows)}
    p = np.empty(len(rows), np.float32)
    for batch in BatchLoader(ds, rows, batch_size, model.device):
        p[[where[int(r)] for r in batch["row"].tolist()]] = model.probabilities(batch)[:, 1].cpu().numpy()
    return p


def tables(spec: ModelSpec, cache: Cache, rows: np.ndarray, p: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """The per-window and per-trial tables (see the module docstring)."""
    index = cache.index()
    rating = np.concatenate([t.column(spec.target).to_numpy() for t in cache.tables])[rows].astype(np.float64)
    label = index.labels(spec.target)[rows]
    rated = bool(np.isfinite(rating).all())
    subject, trial = index.subject[rows], index.trial[rows]
    windows = {"subject": subject, "trial": trial, "window": index.window[rows], "t_start": index.t_start[rows],
               "p_high": p, "high": (p > 0.5).astype(np.int8)}
    keys, first, group = np.unique(np.stack([subject, trial], 1), axis=0, return_index=True, return_inverse=True)
    group = group.ravel()
    count = np.bincount(group)
    p_mean = np.bincount(group, p) / count
    share = np.bincount(group, windows["high"]) / count
    trials = {"subject": keys[:, 0], "trial": keys[:, 1], "windows": count, "p_high": p_mean, "high_share": share,
              "majority": np.where(share == 0.5, p_mean > 0.5, share > 0.5).astype(np.int8),
              "mean": (p_mean > 0.5).astype(np.int8)}
    if rated:
        windows.update(rating=rating, label=label.astype(np.int8), correct=(windows["high"] == label).astype(np.int8))
        trials.update(rating=rating[first], label=label[first].astype(np.int8),
                      correct=(trials["majority"] == label[first]).astype(np.int8))
    return pa.table(windows), pa.table(trials)


def write(table: pa.Table, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)


def summary(spec: ModelSpec, windows: pa.Table, trials: pa.Table) -> str:
    """One line: what was predicted and, with ratings, the accuracy."""
    subjects = sorted(set(trials.column("subject").to_pylist()))
    high = int(np.sum(trials.column("majority").to_numpy()))
    line = (f"predicted {windows.num_rows} windows of {trials.num_rows} trials (subject{'s' * (len(subjects) > 1)} "
            f"{' '.join(map(str, subjects))}): {high} of {trials.num_rows} trials high {spec.target} (majority of "
            "their windows)")
    if "label" not in windows.column_names:
        return line + "; the recording has no ratings, so no accuracy"
    mean_correct = trials.column("mean").to_numpy() == trials.column("label").to_numpy()
    return (line + f"; accuracy against the recording's ratings ({spec.target} > "
            f"{spec.prepare['threshold']:g}): windows {np.mean(windows.column('correct').to_numpy()):.3f}, trials "
            f"{np.mean(trials.column('correct').to_numpy()):.3f} (majority) / {np.mean(mean_correct):.3f} (mean)")


def predict(args: argparse.Namespace) -> dict:
    """Load, check, prepare, predict and write (see the module docstring); returns the two tables, the summary line
    and the seconds each stage took."""
    started = time.perf_counter()
    model = load_model(args.model_uri, tracking_uri(args.tracking_uri), args.device)
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gbvnet-predict-") as folder:
        cache = prepared(model.spec, args, folder)
        rows = rows_to_predict(model.spec, cache, args.subjects)
        ready = time.perf_counter()
        p = probabilities(model, cache, rows, args.batch_size)
        done = time.perf_counter()
        windows, trials = tables(model.spec, cache, rows, p)
    out = Path(args.output)
    write(windows, out / f"windows.{args.format}", args.format)
    write(trials, out / f"trials.{args.format}", args.format)
    line = summary(model.spec, windows, trials)
    print(line)
    print(f"wrote {out / f'windows.{args.format}'} and {out / f'trials.{args.format}'}; model loaded in "
          f"{loaded - started:.1f} s, {'recording prepared' if args.root else 'cache read'} in {ready - loaded:.1f} s, "
          f"{len(rows)} windows predicted in {done - ready:.2f} s ({len(rows) / max(done - ready, 1e-9):.0f} "
          f"windows/s on {model.device})")
    sys.stdout.flush()
    return {"windows": windows, "trials": trials, "summary": line,
            "seconds": {"load": loaded - started, "prepare": ready - loaded, "predict": done - ready}}


def main(argv: list[str] | None = None) -> dict:
    with one_line_errors(), exit_on_interrupt(note="run the command again"):
        return predict(parse_args(argv))


if __name__ == "__main__":
    main()
