"""The hyper-parameter search space of GBV-Net, as dotted keys into the model and training configs.

Keys are ``model.<section>.<field>`` (:class:`gbvnet.config.ModelConfig`) or ``train.<field>``
(:class:`gbvnet.config.TrainConfig`); :func:`apply` writes a sampled point into copies of the base configs, and
the Tune trainables of the search (:func:`gbvnet.train.launch.search_trial`) and of the nested evaluation
(:func:`gbvnet.train.launch.nested_trial`) train one point. It lives in the library because both ``tune/search.py`` and
``evaluation.loso --search-trials`` sample it; both select on :data:`gbvnet.train.metrics.SELECTION_METRIC` (validation
macro-F1).

| key | prior | why |
| --- | --- | --- |
| model.fusion.gate_hidden | choice 32/64/128/256 | gate MLP width |
| model.fusion.dropout | uniform 0-0.5 | fusion/head regularisation |
| model.face.backbone | choice atto/femto/pico | ConvNeXt V2 capacity (cost grows fast) |
| model.face.depth, heads | choice 1-3, 2/4 | temporal Transformer size |
| model.face.dim = model.bio.dim = model.fusion.dim | choice 64/128/256 | shared width d |
| model.bio.local_channels, tcn_channels | choice 32/64/128 | Local / Medium stage widths |
| model.bio.local_kernels | choice "7,5"/"9,7"/"5,3" | Local receptive field |
| model.bio.tcn_kernel | choice 3/5 | TCN kernel |
| model.bio.tcn_dilations | choice "1,2,4"/"1,2,4,8"/"1,2,4,8,16" | TCN depth = receptive field |
| model.bio.attn_heads | choice 2/4 | Global stage heads |
| train.lr | log-uniform 1e-4 - 3e-3 | scale parameter: log prior |
| train.weight_decay | log-uniform 1e-3 - 0.2 | scale parameter: log prior |
| train.batch_size | choice 16/32/64 | |
| train.label_smoothing | uniform 0-0.2 | |

A space is searched for one model (:func:`model_space`): only its keys that can change the network that model
builds are sampled and reported (:func:`model_keys`, a function of the :class:`~gbvnet.config.ModelConfig`): a
bio-only GBV-Net has no face branch and no fusion module, so ``model.face.*`` and ``model.fusion.gate_hidden``
are left out (``model.fusion.dropout`` stays: it is the classifier head's dropout in every GBV-Net); the gate's
width only where the fusion kind has a gate; a comparison network of the model registry reads none of GBV-Net's
sections (its own keys would be ``model.net.*``).

:data:`SPACES` is the one list of spaces (:func:`register_space`: a name, the model preset it searches around,
its distributions). The ``smoke`` space keeps every size tiny (for tests and CPU demos); ``paper`` is the full
space above.
Frames per window and face size are fixed by the window cache (``gbvnet.prepare --frames/--face-size``).

:func:`sampler` is the one sampler of both searches, named as what it is: TPE samples at random for its
start-up trials, set to a third of the budget (at least :data:`MIN_STARTUP`); a budget that does not pass its
start-up is random search, and is called so.

Example:
    >>> from gbvnet.config import TrainConfig, model_preset
    >>> model, train = apply({"model.fusion.dropout": 0.3, "train.lr": 1e-3, "width": 64,
    ...                       "model.bio.tcn_dilations": "1,2,4"}, model_preset("smoke"), TrainConfig())
    >>> model.fusion.dropout, train.lr, model.face.dim, model.bio.dim, model.bio.tcn_dilations
    (0.3, 0.001, 64, 64, (1, 2, 4))
    >>> sorted(k for k in model_space("smoke", model_preset("smoke", modality="bio")) if k.startswith("model."))
    ['model.bio.local_channels', 'model.bio.tcn_channels', 'model.bio.tcn_dilations', 'model.bio.tcn_kernel', 'model.fusion.dropout']
    >>> sampler(4, seed=0)[1], sampler(12, seed=0)[1]
    ('random search (4 trials; TPE would sample its first 5 at random)', 'TPE (the first 5 of 12 trials random)')
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from ray import tune

from gbvnet.config import FUSIONS, PRESETS, ModelConfig, TrainConfig

WIDTH = "width"  # one sampled value sets face.dim, bio.dim and fusion.dim (they must agree)
WIDTH_FIELDS = ("model.face.dim", "model.bio.dim", "model.fusion.dim")
MIN_STARTUP = 5  # our choice: the fewest random start-up trials before TPE models good and bad trials


def sampler(budget: int, seed: int) -> tuple[optuna.samplers.BaseSampler, str]:
    """The seeded Optuna sampler of a search of ``budget`` trials and its name for every output: TPE after
    ``max(MIN_STARTUP, ceil(budget / 3))`` random start-up trials, or random search when the budget is no larger
    than that start-up (TPE would never leave it)."""
    startup = max(MIN_STARTUP, math.ceil(budget / 3))
    if budget <= startup:
        return (optuna.samplers.RandomSampler(seed=seed),
                f"random search ({budget} trials; TPE would sample its first {startup} at random)")
    return (optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
            f"TPE (the first {startup} of {budget} trials random)")


@dataclass(frozen=True)
class Space:
    """One search space: the model preset the sampled points change (:func:`gbvnet.config.model_preset`) and
    ``distributions()``, the Ray Tune distributions of its keys (a new dict per call)."""

    name: str
    preset: str
    distributions: Callable[[], dict[str, Any]]


SPACES: dict[str, Space] = {}
"""The search spaces, by name: the one list (``tune/search.py --space`` choices, its base model, its points)."""


def register_space(name: str, preset: str):
    """Decorator: add a function returning a space's distributions to :data:`SPACES` as ``name``, searched on
    top of the model preset ``preset``."""
    def register(distributions):
        if name in SPACES:
            raise ValueError(f"search space {name!r} is registered already")
        if preset not in PRESETS:
            raise ValueError(f"search space {name!r}: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        SPACES[name] = Space(name, preset, distributions)
        return distributions
    return register


def get_space(name: str) -> Space:
    """The registered space ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}: choose one of {tuple(SPACES)}") from None


def search_space(name: str = "paper") -> dict[str, Any]:
    """Ray Tune distributions of the space ``name``."""
    return get_space(name).distributions()


def model_keys(model: ModelConfig) -> tuple[str, ...]:
    """The search keys that can change what ``model`` trains: ``train.`` fields, and the config fields (or, ending
    in ``.``, sections) of ``model`` that its network reads; everything else is inactive for it."""
    if model.name != "gbvnet":  # a comparison network: its own keyword arguments, none of GBV-Net's sections
        return ("train.", "model.net.")
    keys = ["train.", "model.fusion.dropout"]  # the classifier head's dropout, in every GBV-Net
    if model.modality in ("face", "facebio"):
        keys.append("model.face.")
    if model.modality in ("bio", "facebio"):
        keys.append("model.bio.")
    if model.modality == "facebio":
        keys += ["model.fusion.dim", "model.fusion.heads"]
        if FUSIONS[model.fusion.kind].gates:
            keys.append("model.fusion.gate_hidden")
    return tuple(keys)


def is_active(key: str, model: ModelConfig) -> bool:
    """Whether the search key ``key`` can change ``model`` (:func:`model_keys`); :data:`WIDTH` sets three fields,
    and is active where one of them is."""
    fields = WIDTH_FIELDS if key == WIDTH else (key,)
    return any(f == k or (k.endswith(".") and f.startswith(k)) for f in fields for k in model_keys(model))


def model_space(name: str, model: ModelConfig) -> dict[str, Any]:
    """The distributions of the space ``name`` that can change ``model`` (:func:`is_active`), and a comparison
    network's own dimensions (its registry entry's ``search``, as ``model.net.<argument>``): what a search of that
    model samples and reports."""
    space = {key: distribution for key, distribution in search_space(name).items() if is_active(key, model)}
    return space | {f"model.net.{arg}": _distribution(prior) for arg, prior in model.kind.search.items()}


def _distribution(prior: list | tuple) -> Any:
    """A registry entry's search prior as a Ray Tune distribution: a list of choices, or ``(kind, low, high)``."""
    if isinstance(prior, list):
        return tune.choice(prior)
    kind, low, high = prior
    return {"uniform": tune.uniform, "loguniform": tune.loguniform}[kind](low, high)


def _optimiser() -> dict[str, Any]:
    """The keys every space samples alike: regularisation and the optimiser."""
    return {"model.fusion.dropout": tune.uniform(0.0, 0.5),
            "train.lr": tune.loguniform(1e-4, 3e-3),
            "train.weight_decay": tune.loguniform(1e-3, 0.2),
            "train.label_smoothing": tune.uniform(0.0, 0.2)}


@register_space("paper", preset="paper")
def paper_space() -> dict[str, Any]:
    """The full space of the table above."""
    return {**_optimiser(),
            "model.fusion.gate_hidden": tune.choice([32, 64, 128, 256]),
            "model.face.backbone": tune.choice(["convnextv2_atto", "convnextv2_femto", "convnextv2_pico"]),
            "model.face.depth": tune.choice([1, 2, 3]),
            "model.face.heads": tune.choice([2, 4]),
            WIDTH: tune.choice([64, 128, 256]),
            "model.bio.local_channels": tune.choice([32, 64, 128]),
            "model.bio.local_kernels": tune.choice(["7,5", "9,7", "5,3"]),
            "model.bio.tcn_channels": tune.choice([32, 64, 128]),
            "model.bio.tcn_kernel": tune.choice([3, 5]),
            "model.bio.tcn_dilations": tune.choice(["1,2,4", "1,2,4,8", "1,2,4,8,16"]),
            "model.bio.attn_heads": tune.choice([2, 4]),
            "train.batch_size": tune.choice([16, 32, 64])}


@register_space("smoke", preset="smoke")
def smoke_space() -> dict[str, Any]:
    """Tiny sizes around the smoke preset (tests and CPU demos)."""
    return {**_optimiser(),
            "model.fusion.gate_hidden": tune.choice([16, 32]),
            WIDTH: tune.choice([16, 32]),
            "model.bio.local_channels": tune.choice([8, 16]),
            "model.bio.tcn_channels": tune.choice([8, 16]),
            "model.bio.tcn_kernel": tune.choice([3, 5]),
            "model.bio.tcn_dilations": tune.choice(["1,2", "1,2,4"]),
            "model.face.depth": tune.choice([1, 2]),
            "train.batch_size": tune.choice([16, 32])}


def apply(point: dict[str, Any], model: ModelConfig, train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """Copies of ``model`` and ``train`` with the sampled ``point`` written in (keys as in the table)."""
    model, train = copy.deepcopy(model), copy.deepcopy(train)
    for key, value in point.items():
        if key == WIDTH:  # WIDTH_FIELDS
            model.face.dim = model.bio.dim = model.fusion.dim = int(value)
            continue
        root, *path = key.split(".")
        target = {"model": model, "train": train}.get(root)
        if target is None or not path:
            raise KeyError(f"search key {key!r} must start with 'model.' or 'train.' (or be {WIDTH!r})")
        for name in path[:-1]:
            target = getattr(target, name)
        if isinstance(target, dict):  # model.net: a comparison network's keyword arguments
            target[path[-1]] = value
            continue
        if not hasattr(target, path[-1]):
            raise KeyError(f"search key {key!r}: no field {path[-1]!r}")
        if isinstance(getattr(target, path[-1]), tuple) and isinstance(value, str):
            value = tuple(int(v) for v in value.split(","))  # tuple choices travel as "1,2,4" (Optuna wants scalars)
        setattr(target, path[-1], tuple(value) if isinstance(value, list) else value)
    return model.validate(), train.validate()
