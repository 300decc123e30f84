"""Each kind of thing is listed once: a fusion kind, a baseline, a protocol, a search space or a model preset
registered here (the component itself plus one call of its registry's register function; no CLI, model builder,
evaluation or report file is edited) shows up in the CLIs' choices, the model, the report and the evaluation; a
dataset is one module outside the tree (the one docs/extending.md shows), named in GBVNET_DATASETS."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch
from torch import nn

from gbvnet.config import (
    FUSIONS,
    PRESETS,
    ConfigError,
    FusionKind,
    ModelConfig,
    model_preset,
    register_fusion,
    register_preset,
)
from gbvnet.data import synthetic
from gbvnet.data.cache import open_cache
from gbvnet.data.registry import DATASETS
from gbvnet.evaluation import baselines, engine, report, run
from gbvnet.folds.protocols import (
    PROTOCOLS,
    EvaluationProtocol,
    Fold,
    ProtocolArgument,
    check_fold,
    register_protocol,
)
from gbvnet.models import create_model
from gbvnet.prepare import cli as prepare
from gbvnet.search import cli as search
from gbvnet.search.space import SPACES, register_space, search_space
from gbvnet.train import cli as train
from tests.test_docs import ROOT, examples


class SumFusion(nn.Module):
    """A dummy fusion kind: the sum of the two branches' pooled features."""

    def __init__(self, cfg):
        super().__init__()
        self.out_dim = cfg.dim

    def forward(self, face, bio):
        return face.mean(1) + bio.mean(1), None


class HalvesSplit(EvaluationProtocol):
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


class EvenOddWindows(EvaluationProtocol):
    """A dummy leaky protocol: even windows train, odd ones test (its constructor knows nothing of leakage)."""

    leaky = True

    def __init__(self, seed: int = 0):
        self.seed = seed

    def _folds(self, subjects, trials, labels):
        rows = np.arange(len(subjects))
        yield Fold("even-odd", "window", rows[::2], [], rows[1::2])


@pytest.fixture
def registered():
    """Register the dummies; take them out again afterwards."""
    register_fusion(FusionKind("sum", f"{__name__}.SumFusion", "face+bio (sum)", gates=False,
                               help="pooled features added"))
    register_protocol("halves")(HalvesSplit)
    register_space("tiny", preset="smoke")(lambda: {"train.lr": search.tune.loguniform(1e-4, 1e-3)})
    register_preset("narrow")(lambda: ModelConfig(modality="bio"))
    baselines.register_baseline("always_high")(
        lambda fold, y, features, seed: baselines.confusion(y[fold.test], np.ones(len(fold.test), np.int64)))
    yield
    for registry, name in ((FUSIONS, "sum"), (PROTOCOLS, "halves"), (SPACES, "tiny"),
                           (baselines.BASELINES, "always_high"), (PRESETS, "narrow")):
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


def test_a_leaky_protocol_says_so_and_the_base_class_handles_allow_leaky():
    X = np.array([(s, t) for s in (1, 2) for t in (1, 2) for _ in range(3)])
    with pytest.raises(ValueError, match="protocol 'EvenOddWindows' is leaky .*refused unless allow_leaky=True"):
        EvenOddWindows(seed=1)
    protocol = EvenOddWindows(seed=1, allow_leaky=True)
    assert protocol.seed == 1 and protocol.allow_leaky
    [fold] = protocol.folds(X)
    assert fold.check["verdict"].startswith("LEAKY (allowed by the user)")
    assert not HalvesSplit().allow_leaky  # a protocol that is not leaky: its folds still refuse window splits
    with pytest.raises(ValueError, match="window-level \\(leaky\\) split refused"):
        check_fold(fold, X[:, 0], X[:, 1], allow_leaky=HalvesSplit().allow_leaky)


def test_a_registered_preset_is_a_preset_choice(registered):
    assert "narrow" in choices(run.build_parser(), "preset")
    assert train.parse_args(["--cache", "c", "--train-subjects", "1", "--val-subjects", "2", "--preset",
                             "narrow"]).preset == "narrow"
    cfg = model_preset("narrow", bio_channels=4)
    assert (cfg.modality, cfg.bio.channels, cfg.face.frames) == ("bio", 4, 8)
    with pytest.raises(ValueError, match="preset 'narrow' is registered already"):
        register_preset("narrow")(ModelConfig)


@pytest.fixture
def own_dataset(tmp_path, monkeypatch):
    """docs/extending.md's dataset module, written into a folder outside the tree and named in GBVNET_DATASETS
    (taken out of the registry again afterwards)."""
    [module] = [code for before, code in examples(ROOT / "docs" / "extending.md", "python")
                if before == "<!-- run by tests/test_registries.py -->"]
    (tmp_path / "my_datasets").mkdir()
    (tmp_path / "my_datasets" / "mydata.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path / "my_datasets"))
    monkeypatch.setenv("GBVNET_DATASETS", "mydata")
    yield
    monkeypatch.delenv("GBVNET_DATASETS")
    DATASETS.pop("mydata", None)
    sys.modules.pop("mydata", None)


def test_a_dataset_is_one_module(own_dataset, tmp_path, monkeypatch, capsys):
    """The module alone makes a dataset: listed after the built-in ones, a --dataset choice of the evaluations, its
    synthetic corpus written by gbvnet.data.synthetic and prepared (faces too) by gbvnet.prepare, as the docs'
    commands do."""
    assert list(DATASETS) == ["deap", "mahnob", "amigos", "mydata"]
    assert DATASETS["mydata"].camera_size == (640, 480)
    assert "mydata" in choices(run.build_parser(), "dataset") and "mydata" in choices(search.build_parser(), "dataset")
    corpus, cache = tmp_path / "data" / "synthetic" / "mydata", tmp_path / "data" / "cache" / "mydata"
    synthetic.main(["--dataset", "mydata", "--out", str(corpus), "--n-subjects", "2", "--trials", "4"])
    assert f"wrote 8 mydata trials of 2 subjects to {corpus}" in capsys.readouterr().out
    prepare.main(["--dataset", "mydata", "--root", str(corpus), "--cache", str(cache)])
    manifest = open_cache(str(cache)).manifest
    assert sorted(manifest.subjects) == [1, 2] and manifest.face and manifest.config.h_freq is None
    index = open_cache(str(cache)).index()
    assert len(index.subject) == 2 * 4 * 2 and index.has_face_rows.all()  # 6 s stimuli: two 3 s windows a trial
    with pytest.raises(SystemExit):
        synthetic.main(["--dataset", "mydata", "--out", str(tmp_path / "x"), "--long-trials", "1"])
    assert "--long-trials does not apply to mydata" in capsys.readouterr().err
    monkeypatch.setenv("GBVNET_DATASETS", "mydata, no_such_module")
    with pytest.raises(ConfigError, match="^GBVNET_DATASETS names 'no_such_module', which cannot be imported"):
        list(DATASETS)
