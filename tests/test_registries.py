"""Each kind of thing is listed once: a fusion kind, a baseline, a protocol or a search space registered here (the
component itself plus one call of its registry's register function; no CLI, model builder, evaluation or report
file is edited) shows up in the CLIs' choices, the model, the report and the evaluation."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from torch import nn

from gbvnet.config import FUSIONS, FusionKind, register_fusion
from gbvnet.evaluation import baselines, engine, report, run
from gbvnet.folds.protocols import PROTOCOLS, Fold, ProtocolArgument, _Protocol, register_protocol
from gbvnet.models import create_model
from gbvnet.search import cli as search
from gbvnet.search.space import SPACES, register_space, search_space
from gbvnet.train import cli as train


class SumFusion(nn.Module):
    """A dummy fusion kind: the sum of the two branches' pooled features."""

    def __init__(self, cfg):
        super().__init__()
        self.out_dim = cfg.dim

    def forward(self, face, bio):
        return face.mean(1) + bio.mean(1), None


class HalvesSplit(_Protocol):
    """A dummy protocol: the first half of the subjects train (the ``val_share`` of them validate), the rest
    test."""

    arguments = (ProtocolArgument("val_share", float, 0.5, help="share of the training subjects that validate"),)

    def __init__(self, seed: int = 0, val_share: float = 0.5):
        self.seed, self.val_share = seed, val_share

    def _folds(self, subjects, trials, labels):
        rows, uniq = np.arange(len(subjects)), np.unique(subjects)
        first = uniq[: len(uniq) // 2]
        val = first[: max(1, int(self.val_share * len(first)))]
        train_subjects = np.setdiff1d(first, val)
        yield Fold("halves", "subject", rows[np.isin(subjects, train_subjects)], rows[np.isin(subjects, val)],
                   rows[~np.isin(subjects, first)])


@pytest.fixture
def registered():
    """Register the dummies; take them out again afterwards."""
    register_fusion(FusionKind("sum", f"{__name__}.SumFusion", "face+bio (sum)", gates=False,
                               help="pooled features added"))
    register_protocol("halves")(HalvesSplit)
    register_space("tiny", preset="smoke")(lambda: {"train.lr": search.tune.loguniform(1e-4, 1e-3)})
    baselines.register_baseline("always_high")(
        lambda fold, y, features, seed: baselines.confusion(y[fold.test], np.ones(len(fold.test), np.int64)))
    yield
    for registry, name in ((FUSIONS, "sum"), (PROTOCOLS, "halves"), (SPACES, "tiny"),
                           (baselines.BASELINES, "always_high")):
        registry.pop(name)


def choices(parser: argparse.ArgumentParser, dest: str) -> list[str]:
    return list(next(a for a in parser._actions if a.dest == dest).choices)


def test_a_registered_fusion_kind_reaches_the_clis_model_and_report(registered):
    assert train.parse_args(["--cache", "c", "--train-subjects", "1", "--val-subjects", "2", "--fusion",
                             "sum"]).fusion == "sum"
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    assert "sum" in choices(parser, "fusion") and "sum" in choices(search.build_parser(), "fusion")
    model = create_model("smoke", modality="facebio", fusion="sum", bio_channels=4, bio_samples=64)
    assert isinstance(model.fusion, SumFusion)
    out = model(face=torch.rand(2, 4, 3, 64, 64), bio=torch.randn(2, 4, 64))
    assert out["logits"].shape == (2, 2) and "gates" not in out
    assert (("facebio", "sum", "face"), "face+bio (sum)") in report.modality_rows()
    row = {"dataset": "deap", "protocol": "loso", "tested_subjects": "1 2", "folds": 2, "target": "valence",
           "row_key": ("facebio", "sum", "face"), "folds_digest": "x", "accuracy_n": "0.700 ± 0.100 (n=2)",
           "f1_n": "0.600 ± 0.100 (n=2)", "majority_accuracy": "0.500 ± 0.000", "configuration": "untuned smoke",
           "n_one_class_folds": 0, "fold_failures": "-"}
    [(_, _, body)] = report.ablation_tables([row])
    assert body == [["face+bio (sum)", "0.700 ± 0.100 (n=2)", "0.600 ± 0.100 (n=2)", "-", "-",
                     "0.500 ± 0.000 / -"]]


def test_a_registered_baseline_is_scored_and_reported(registered):
    y = np.array([1, 0, 1, 0, 1, 1])
    folds = [Fold("f", "window", train=[0, 1, 2], val=[], test=[3, 4, 5])]
    scored = baselines.baseline_confusions(folds, y, None)
    assert list(scored) == ["majority", "stratified", "always_high"]  # no features: bandpower_logreg skipped
    assert scored["always_high"][0].tolist() == [[0, 1], [0, 2]]
    assert {"always_high_accuracy", "p_holm_always_high"} <= set(report.run_columns())


def test_a_registered_protocol_runs_through_the_evaluation_cli(registered, mahnob_cache, monkeypatch):
    parser = run.build_parser()
    assert "halves" in choices(parser, "protocol") and "--val-share" in parser.format_help()
    args = parser.parse_args(["--protocol", "halves", "--dataset", "mahnob", "--cache", "c", "--val-share", "0.3"])
    assert run.protocol_arguments(args, "halves") == {"seed": 0, "val_share": 0.3}
    with pytest.raises(ValueError, match="--val-share does not apply to protocol 'loso'"):
        run.protocol_arguments(args, "loso")
    assert run.protocol_arguments(parser.parse_args(["--protocol", "halves", "--dataset", "mahnob"]),
                                  "halves")["val_share"] == 0.5  # the declared default
    with pytest.raises(ValueError, match="'segment-random' is leaky"):
        run.protocol_arguments(parser.parse_args(["--protocol", "segment-random", "--dataset", "mahnob"]),
                               "segment-random")

    class Planned(Exception):
        pass

    planned = {}

    def stop(**_):
        raise Planned

    real_plan = engine.plan_folds
    monkeypatch.setattr(engine, "plan_folds", lambda spec, index: planned.setdefault("folds", real_plan(spec, index)))
    monkeypatch.setattr(engine, "init_ray", stop)
    with pytest.raises(Planned):  # folds planned and checked, jobs made: everything before Ray starts
        run.main(["--protocol", "halves", "--dataset", "mahnob", "--cache", str(mahnob_cache), "--modality", "bio"])
    [fold] = planned["folds"]
    assert fold.name == "halves" and fold.check["verdict"].startswith("passed")


def test_a_registered_search_space_is_a_search_choice(registered):
    parser = search.build_parser()
    assert "tiny" in choices(parser, "space")
    assert set(search_space("tiny")) == {"train.lr"} and SPACES["tiny"].preset == "smoke"
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        register_space("huge", preset="huge")(dict)
    with pytest.raises(ValueError, match="registered already"):
        register_fusion(FUSIONS["gated"])
