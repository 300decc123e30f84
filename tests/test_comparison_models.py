"""The model registry (gbvnet.config.MODELS): every network trains through the same worker loop on the same cache
rows, reads the channels it is given, and is refused with one line where it cannot take the input."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from gbvnet.cli import add_model_arguments, apply_model_arguments
from gbvnet.config import MODELS, ConfigError, TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.evaluation import report
from gbvnet.folds.protocols import subject_fold
from gbvnet.models import build_model
from gbvnet.models.comparison import check_input_fits
from gbvnet.search.space import apply, model_space
from gbvnet.train.loop import channel_index, fit_model_to_cache, make_job, train_loop_per_worker


class LocalSession:
    """The worker loop's session, in this process: one CPU worker that keeps what it is told."""

    rank, world, name, device = 0, 1, "local", torch.device("cpu")

    def __init__(self):
        self.reports: list[dict] = []

    def prepare(self, model):
        self.model = model
        return model

    def checkpoint(self):
        return None

    def report(self, metrics: dict, directory: str | None = None) -> None:
        self.reports.append(metrics)


def model_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_trains_an_epoch_through_the_worker_loop(name, small_mahnob_cache):
    cache = open_cache(str(small_mahnob_cache))
    manifest = cache.manifest
    model = apply_model_arguments(model_args("--model", name), model_preset("smoke"))
    if name == "facecnn":
        model.net = {"backbone": "resnet10t"}  # the smallest timm CNN: one CPU epoch in a second
    fold = subject_fold(cache.index(), [1], [2], [])
    job = make_job(str(small_mahnob_cache), model, TrainConfig(epochs=1, batch_size=4, warmup_epochs=0), fold)
    session = LocalSession()
    train_loop_per_worker(job.to_dict(), session)

    (metrics,) = session.reports
    assert metrics["train_windows"] == len(fold.train) and metrics["done"]
    assert np.isfinite(metrics["train_loss"]) and 0 <= metrics["val_accuracy"] <= 1
    fitted = job.model
    assert fitted.name == name and fitted.modality == MODELS[name].modalities[0]
    inputs = {}
    if fitted.modality != "face":
        expected = manifest.channels if MODELS[name].channels == "all" else manifest.channels[:32]
        assert list(fitted.channels) == list(expected) and fitted.bio.channels == len(expected)
        inputs["bio"] = torch.zeros(3, fitted.bio.channels, fitted.bio.samples)
    if fitted.modality != "bio":
        inputs["face"] = torch.zeros(3, fitted.face.frames, 3, fitted.face.image_size, fitted.face.image_size)
    with torch.no_grad():
        assert tuple(session.model.eval()(**inputs)["logits"].shape) == (3, 2)


def test_eeg_channels_are_the_cache_electrodes_and_named_channels_are_kept_in_cache_order(small_mahnob_cache):
    manifest = open_cache(str(small_mahnob_cache)).manifest
    eeg = fit_model_to_cache(model_preset("smoke", model="eegnet", modality=None), manifest)
    assert "GSR1" in manifest.channels and "GSR1" not in eeg.channels and len(eeg.channels) == 32
    assert channel_index(eeg, manifest) == list(range(32))
    named = fit_model_to_cache(model_preset("smoke", model="eegnet", modality=None, channels=("Cz", "Fp1")), manifest)
    assert named.channels == ("Fp1", "Cz") and channel_index(named, manifest) == [0, manifest.channels.index("Cz")]
    gbv = fit_model_to_cache(model_preset("smoke", modality="bio"), manifest)
    assert list(gbv.channels) == manifest.channels and channel_index(gbv, manifest) is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "eegnet", "--modality", "face"], "model 'eegnet' takes modality bio, not 'face'"),
    (["--model", "facecnn", "--modality", "bio"], "model 'facecnn' takes modality face, not 'bio'"),
    (["--model", "eegnet", "--channels", "Cz", "Nose"], "--channels: Nose not among the cache's channels"),
    (["--model", "dgcnn", "--channels", "all"], "channels EXG1, EXG2, EXG3, GSR1, Resp, Temp have no electrode "
                                                "position"),
])
def test_inputs_a_model_cannot_take_are_refused_before_training(argv, message, small_mahnob_cache):
    cache = open_cache(str(small_mahnob_cache))
    fold = subject_fold(cache.index(), [1], [2], [])
    with pytest.raises(ConfigError, match=message):
        model = apply_model_arguments(model_args(*argv), model_preset("smoke"))
        make_job(str(small_mahnob_cache), model, TrainConfig(epochs=1), fold)


def test_an_unknown_model_name_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        model_args("--model", "eegnet5")
    assert "invalid choice: 'eegnet5'" in capsys.readouterr().err and "eegnet" in ", ".join(MODELS)


def test_a_window_shorter_than_a_networks_kernels_names_the_model_window_and_minimum():
    cfg = model_preset("smoke", model="eegconformer", modality=None, bio_channels=4, bio_samples=64)
    with pytest.raises(ConfigError, match=r"model 'eegconformer' cannot take 0.5 s windows \(64 samples at 128 Hz\): "
                                          r"it needs at least (\d+) samples") as error:
        check_input_fits(cfg)
    shortest = int(error.value.args[0].split("at least ")[1].split()[0])
    cfg.bio.samples = shortest
    check_input_fits(cfg)  # the minimum it names runs
    cfg.bio.samples = shortest - 1
    with pytest.raises(RuntimeError):
        build_model(cfg)(bio=torch.zeros(2, 4, shortest - 1))


@pytest.mark.parametrize("name", sorted(n for n in MODELS if n != "gbvnet"))
def test_a_comparison_networks_search_samples_its_own_arguments_and_builds(name, small_mahnob_cache):
    manifest = open_cache(str(small_mahnob_cache)).manifest
    base = model_preset("smoke", model=name, modality=None)
    space = model_space("smoke", base)
    assert {k for k in space if k.startswith("model.")} == {f"model.net.{a}" for a in MODELS[name].search}
    assert "model.fusion.dropout" not in space  # GBV-Net's head: not this network's
    for seed in range(2):
        point = {k: d.sample(random_state=np.random.RandomState(seed)) for k, d in space.items()}
        model, _ = apply(point, base, TrainConfig())
        fitted = fit_model_to_cache(model, manifest)
        assert all(fitted.network_arguments[k.removeprefix("model.net.")] == v for k, v in point.items()
                   if k.startswith("model.net."))
        if fitted.modality == "bio":
            check_input_fits(fitted)


def test_a_comparison_networks_runs_have_their_own_row_in_the_ablation_table():
    row = {"dataset": "deap", "protocol": "loso", "tested_subjects": "1 2", "folds": 2, "target": "valence",
           "row_key": ("eegnet:bio", "", "all"), "folds_digest": "x", "accuracy_n": "0.700 ± 0.100 (n=2)",
           "f1_n": "0.600 ± 0.100 (n=2)", "majority_accuracy": "0.500 ± 0.000", "configuration": "untuned smoke",
           "n_one_class_folds": 0, "fold_failures": "-"}
    gbvnet = {**row, "row_key": ("bio", "", "all"), "accuracy_n": "0.800 ± 0.100 (n=2)"}
    [(_, _, body)] = report.ablation_tables([row, gbvnet])
    assert [line[:2] for line in body] == [["bio", "0.800 ± 0.100 (n=2)"], ["EEGNet (bio)", "0.700 ± 0.100 (n=2)"]]
