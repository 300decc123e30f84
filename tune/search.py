"""Hyper-parameter search for GBV-Net: Ray Tune + Optuna (TPE) + ASHA, each trial a Ray Train run.

    ray job submit --working-dir . -- python tune/search.py --dataset mahnob --synthetic --num-samples 8
    python tune/search.py --dataset deap --root ~/data/deap --num-samples 64 --workers-per-trial 2 --gpus-per-worker 1
    python tune/search.py --dataset deap --cache data/cache/deap --modality bio --gpus-per-worker 0.25 --concurrent 4

Honesty: the search only ever sees its *search subjects* (``--search-subjects``; default: the first half of the
cache's subjects that have rows for ``--modality``, sorted). Which rows a modality can use is the rule the
evaluations use (:func:`gbvnet.splits.usable_rows`: face modalities only windows with face frames, so in DEAP
subjects 1-22); search subjects without such rows are left out with a warning, and a search left with fewer than
2 subjects stops before Ray starts, naming them. Among them, a seeded 25 % (at least one) are *validation
subjects*; the rest train. The objective is validation macro-F1 on those held-out subjects, so it measures
cross-subject generalisation and never touches the subjects an evaluation tests on. Both lists are recorded in MLflow and in the best config, and
``evaluation.loso --config`` refuses to test on a searched subject unless told otherwise.

Each trial is a Tune function that builds and fits a ``TorchTrainer`` and reports through
``TuneReportCallback`` (the Ray Train V2 way); ASHA stops poor trials early on ``val_macro_f1`` per epoch; Optuna's
TPE (seeded) proposes configurations, at most ``--concurrent`` at a time. ``--resume`` restores an interrupted
search from its storage without re-running finished trials. The best configuration is written to ``--output``
(YAML with ``model``, ``train`` and ``search`` sections), the format ``evaluation.loso --config`` reads. The
``search`` section is its provenance (dataset, target, modality, cache manifest hash, subjects, label threshold,
face weights); ``train`` leaves out what the evaluation decides for itself (epochs, early-stopping patience, target,
seed). ``--pretrained`` / ``--face-checkpoint PATH`` start the face backbone from timm's or local weights.
While it runs, a table of the trials (epoch, validation macro-F1, elapsed and remaining time) is printed every
30 s (:mod:`gbvnet.progress`; ``--quiet`` turns it off).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import yaml
from optuna.samplers import TPESampler
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from gbvnet.cli import COMPUTE_FIELDS, add_compute_arguments, apply_compute_arguments
from gbvnet.config import TARGETS, TrainConfig, model_preset, to_dict
from gbvnet.data.cache import open_cache, write_text
from gbvnet.datasets import DATASETS, resolve_cache
from gbvnet.progress import ProgressTable
from gbvnet.splits import Fold, subjects_with_rows, usable_rows
from gbvnet.tracking import Tracker, tracking_uri
from gbvnet.train import (
    fit_model_to_cache,
    init_ray,
    make_job,
    run_tuner,
    storage_path,
    tune_trial_resources,
)
from tune.space import apply, search_space, search_trial

METRIC = "val_macro_f1"


def search_fold(index, search_subjects: list[int], seed: int, modality: str = "bio") -> Fold:
    """Train / validation rows from the search subjects only (validation: a seeded 25 % of them), restricted to
    the rows ``modality`` can use; search subjects without any are left out (with a warning)."""
    known = set(np.unique(index.subject).tolist())
    if set(search_subjects) - known:
        raise ValueError(f"search subjects {sorted(set(search_subjects) - known)} are not in the cache")
    rows = usable_rows(index, modality)
    have = subjects_with_rows(index, rows)
    without = sorted(set(search_subjects) - set(have))
    kept = sorted(set(search_subjects) & set(have))
    if len(kept) < 2:
        reason = (f": search subjects {without} have no face frames (modality {modality!r}); subjects with faces: "
                  f"{have} (choose --search-subjects among them, or --modality bio)" if without else "")
        raise ValueError(f"the search needs at least 2 subjects (some train, some validate), got {kept}{reason}")
    if without:
        warnings.warn(f"search subjects {without} have no face frames: modality {modality!r} searches on {kept}",
                      stacklevel=2)
    rng = np.random.default_rng(seed)
    n_val = max(1, math.ceil(0.25 * len(kept)))
    val = sorted(rng.choice(kept, n_val, replace=False).tolist())
    train = sorted(set(kept) - set(val))
    return Fold("search", "subject", rows[np.isin(index.subject[rows], train)],
                rows[np.isin(index.subject[rows], val)])


def make_search_alg(seed: int, concurrent: int, algo: str = "optuna"):
    """Optuna TPE (seeded: the same seed proposes the same configurations) behind a concurrency limit, or plain
    seeded random search (``algo="random"``, the baseline of ``bench/search_efficiency.py``)."""
    if algo == "random":
        return BasicVariantGenerator(random_state=seed, max_concurrent=concurrent)
    searcher = OptunaSearch(metric=METRIC, mode="max", sampler=TPESampler(seed=seed))
    return ConcurrencyLimiter(searcher, max_concurrent=concurrent)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tune/search.py", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=DATASETS, required=True)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--root")
    src.add_argument("--synthetic", action="store_true")
    p.add_argument("--cache")
    p.add_argument("--target", choices=TARGETS, default="valence")
    p.add_argument("--modality", choices=("face", "bio", "facebio"), default="facebio")
    p.add_argument("--space", choices=("paper", "smoke"), default=None,
                   help="search space (default: smoke with --synthetic, paper otherwise)")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--grace-epochs", type=int, default=1, help="ASHA grace period (epochs)")
    p.add_argument("--reduction-factor", type=int, default=2,
                   help="ASHA: keeps the best 1/factor of the trials at each rung")
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--search-subjects", type=int, nargs="+", default=None,
                   help="default: the first half of the subjects with rows for --modality")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true",
                         help="start the face backbone from timm's pretrained weights (downloads them)")
    weights.add_argument("--face-checkpoint", metavar="PATH", help="start the face backbone from this weights file")
    p.add_argument("--storage", default=None, help="Ray results path or URI (default ./runs/ray)")
    p.add_argument("--name", default=None,
                   help="search name (default search-<dataset>-<modality>-<target>-<algo>-seed<S>)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--output", default="best.yaml")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algo", choices=("optuna", "random"), default="optuna",
                   help="optuna: TPE + ASHA early stopping (default); random: random search, no early stopping")
    p.add_argument("--quiet", action="store_true", help="no progress table while the trials run")
    add_compute_arguments(p, workers_flag="--workers-per-trial")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    space_kind = args.space or ("smoke" if args.synthetic else "paper")
    cache = resolve_cache(args.dataset, root=args.root, synthetic=args.synthetic, cache=args.cache,
                          need_face=args.modality != "bio")
    index = open_cache(cache).index()
    subjects = subjects_with_rows(index, usable_rows(index, args.modality))
    requested = args.search_subjects or subjects[: max(2, len(subjects) // 2)]
    fold = search_fold(index, requested, args.seed, args.modality)  # before Ray: a bad choice costs no start-up
    train_subjects = np.unique(index.subject[fold.train]).tolist()
    val_subjects = np.unique(index.subject[fold.val]).tolist()
    search_subjects = sorted(train_subjects + val_subjects)
    if args.face_checkpoint and not Path(args.face_checkpoint).is_file():
        raise ValueError(f"--face-checkpoint {args.face_checkpoint}: no such file")

    model = model_preset("smoke" if space_kind == "smoke" else "paper", modality=args.modality)
    model.face.pretrained = args.pretrained
    model.face.checkpoint = str(Path(args.face_checkpoint).resolve()) if args.face_checkpoint else None
    face_weights = model.face.weights if args.modality != "bio" else "none"
    label_threshold = index.manifest.config.threshold
    train = apply_compute_arguments(args, TrainConfig(target=args.target, epochs=args.max_epochs,
                                                      patience=args.max_epochs, seed=args.seed))
    make_job(cache, model, train, fold)  # validate cache, configs and the fold before anything is scheduled
    storage = storage_path(args.storage)
    name = args.name or f"search-{args.dataset}-{args.modality}-{args.target}-{args.algo}-seed{args.seed}"
    base = {"model": model, "train": train, "cache": cache, "fold": fold.to_dict()}

    init_ray(log_to_driver=False)  # the progress table reports the trials
    tracker = Tracker(tracking_uri(args.tracking_uri), f"gbvnet-{args.dataset}-search", name, run_name=name,
                      resume=args.resume)
    tracker.log_cache(cache, index, context="search")
    tracker.log_params({"dataset": args.dataset, "target": args.target, "modality": args.modality,
                        "space": space_kind, "num_samples": args.num_samples, "max_epochs": args.max_epochs,
                        "seed": args.seed, "search_subjects": search_subjects, "train_subjects": train_subjects,
                        "val_subjects": val_subjects, "cache_manifest_hash": index.manifest_hash,
                        "excluded_subjects": sorted(set(requested) - set(search_subjects)),
                        "label_threshold": label_threshold, "face_weights": face_weights})
    trainable = tune.with_resources(
        tune.with_parameters(search_trial, base=base, storage=storage, experiment=name),
        tune_trial_resources(train))
    progress = [] if args.quiet else [ProgressTable(total=args.num_samples, max_epochs=args.max_epochs,
                                                    concurrency=args.concurrent, title="search")]
    tune_config = tune.TuneConfig(
        search_alg=make_search_alg(args.seed, args.concurrent, args.algo),
        scheduler=ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=args.max_epochs,
                                grace_period=args.grace_epochs, reduction_factor=args.reduction_factor)
        if args.algo == "optuna" else None,
        num_samples=args.num_samples)
    grid = run_tuner(trainable, name, storage, resume=args.resume, param_space=search_space(space_kind),
                     tune_config=tune_config, callbacks=progress, max_failures=1)
    finished = [r for r in grid if r.error is None and r.metrics and METRIC in r.metrics]
    if not finished:
        tracker.finish("FAILED")
        raise RuntimeError(f"no search trial finished; errors: {[str(r.error) for r in grid if r.error]}")
    rows = []
    for r in finished:
        history = r.metrics_dataframe.to_dict("records")
        best_epoch_score = max(row[METRIC] for row in history)
        rows.append((best_epoch_score, r))
        tracker.log_child(f"trial-{r.metrics['trial_id']}", history, params=r.config)
    rows.sort(key=lambda item: -item[0])
    best_score, best = rows[0]
    best_model, best_train = apply(best.config, fit_model_to_cache(model, index.manifest), train)
    document = {
        "model": to_dict(best_model),
        "train": {k: v for k, v in to_dict(best_train).items()
                  if k not in ("target", "seed", "epochs", "patience", *COMPUTE_FIELDS)},  # the evaluation's own
        "search": {"dataset": args.dataset, "target": args.target, "modality": args.modality,
                   "subjects": search_subjects, "excluded_subjects": sorted(set(requested) - set(search_subjects)),
                   "label_threshold": label_threshold, "face_weights": face_weights,
                   "train_subjects": train_subjects, "val_subjects": val_subjects, "metric": METRIC,
                   "best_val_macro_f1": float(best_score), "trial_id": best.metrics["trial_id"],
                   "trials": len(grid), "trial_epochs": int(sum(r.metrics.get("epoch", 0) for r in grid)),
                   "algo": args.algo, "cache_manifest_hash": index.manifest_hash,
                   "mlflow_run_id": tracker.run_id},
    }
    tracker.log_metrics({"best_val_macro_f1": float(best_score), "trials": len(grid)})
    tracker.log_json(document, "best_config.json")
    tracker.finish()
    write_text(args.output, yaml.safe_dump(document, sort_keys=False))

    print(f"{'rank':>4} {'trial':>10} {'best val macro-F1':>17} {'epochs':>6}  config")
    for rank, (f1, r) in enumerate(rows[:5], 1):
        shown = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                          for k, v in r.config.items())
        print(f"{rank:>4} {r.metrics['trial_id']:>10} {f1:>17.3f} {int(r.metrics['epoch']):>6}  {shown}")
    print(f"searched on subjects {search_subjects} (validation {val_subjects}); best config -> {args.output}")
    sys.stdout.flush()
    return document


if __name__ == "__main__":
    main()
