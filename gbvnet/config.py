"""Typed configuration for the model, data preparation and training, with validation and YAML loading.

Every size in the system comes from here. Defaults follow ``shared/PAPER.md``: where the paper is silent the
default is *our* choice and is marked so in the field's comment. Model presets (:data:`PRESETS`,
:func:`register_preset`): ``smoke`` (tiny, CPU tests) and ``paper`` (the sizes we use to reproduce the paper).

Example:
    >>> cfg = model_preset("smoke", modality="bio", bio_channels=40, bio_samples=384)
    >>> cfg.bio.channels, cfg.modality
    (40, 'bio')
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from gbvnet.data.storage import read_text

MODALITIES = ("face", "bio", "facebio")
TARGETS = ("valence", "arousal")


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent."""


def _positive(name: str, value: int | float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


@dataclass
class FaceConfig:
    backbone: str = "convnextv2_atto"  # our choice (paper preset: convnextv2_nano); any timm convnextv2_*
    pretrained: bool = False  # True: timm's normal download path (online users)
    checkpoint: str | None = None  # local backbone weights file (offline users)
    frames: int = 8  # our choice: frames per window
    image_size: int = 112  # our choice (smoke: 64)
    dim: int = 128  # projection width d
    depth: int = 2  # temporal Transformer layers
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1

    def validate(self) -> None:
        if not self.backbone.startswith("convnextv2_"):
            raise ConfigError(f"face.backbone must be a timm convnextv2_* model, got {self.backbone!r}")
        for name in ("frames", "image_size", "dim", "depth", "heads", "mlp_ratio"):
            _positive(f"face.{name}", getattr(self, name))
        if self.image_size < 32:
            raise ConfigError(f"face.image_size must be >= 32 (ConvNeXt downsamples by 32), got {self.image_size}")
        if self.dim % self.heads:
            raise ConfigError(f"face.dim ({self.dim}) must be divisible by face.heads ({self.heads})")
        _fraction("face.dropout", self.dropout)
        if self.checkpoint and self.pretrained:
            raise ConfigError("face.pretrained and face.checkpoint are exclusive: choose one source of weights")

    @property
    def weights(self) -> str:
        """Where the backbone's initial weights come from: ``timm-pretrained``, ``checkpoint:<path>`` or
        ``scratch`` (logged with every run)."""
        if self.checkpoint:
            return f"checkpoint:{self.checkpoint}"
        return "timm-pretrained" if self.pretrained else "scratch"


@dataclass
class BioConfig:
    channels: int = 40  # set from the data: DEAP 40, MAHNOB 38 (or the subset used)
    samples: int = 384  # set from the data: window seconds x rate (3 s x 128 Hz)
    rate: float = 128.0  # set from the data: Hz (the comparison networks' sfreq)
    local_channels: int = 64  # our choice: Local stage width
    local_kernels: tuple[int, int] = (7, 5)  # our choice; stride 2 on the first block
    tcn_channels: int = 64
    tcn_kernel: int = 3
    tcn_dilations: tuple[int, ...] = (1, 2, 4, 8)
    attn_heads: int = 4
    dim: int = 128
    dropout: float = 0.1

    def validate(self) -> None:
        for name in ("channels", "samples", "local_channels", "tcn_channels", "tcn_kernel", "attn_heads", "dim"):
            _positive(f"bio.{name}", getattr(self, name))
        if len(self.local_kernels) != 2 or any(k < 1 or k % 2 == 0 for k in self.local_kernels):
            raise ConfigError(f"bio.local_kernels must be two odd kernel sizes, got {self.local_kernels!r}")
        if not self.tcn_dilations or any(d < 1 for d in self.tcn_dilations):
            raise ConfigError(f"bio.tcn_dilations must be positive integers, got {self.tcn_dilations!r}")
        if self.tcn_channels % self.attn_heads:
            raise ConfigError(
                f"bio.tcn_channels ({self.tcn_channels}) must be divisible by bio.attn_heads ({self.attn_heads})"
            )
        if self.samples < 8:
            raise ConfigError(f"bio.samples must be >= 8, got {self.samples}")
        _fraction("bio.dropout", self.dropout)


@dataclass(frozen=True)
class FusionKind:
    """One way to fuse the face and bio tokens (``fusion.kind``): its name, its module, its row in the report.

    The module is the dotted path of an ``nn.Module`` class built as ``cls(FusionConfig)``, with an ``out_dim``
    attribute, whose ``forward(face (B, F, d), bio (B, T', d))`` returns ``(features (B, out_dim), gates)``;
    ``gates`` is ``(B, 2, d)`` (face, bio weights) when ``gates`` is true, else None. It is imported on first use,
    so this registry stays free of torch.
    """

    name: str
    module: str  # "package.module.ClassName"
    label: str  # the model's row in the report's ablation table
    gates: bool  # forward returns gate weights (logged per epoch as val_gate_face)
    help: str  # one line for the --fusion help

    def module_class(self) -> type:
        """The fusion ``nn.Module`` class (imported now)."""
        package, _, name = self.module.rpartition(".")
        return getattr(importlib.import_module(package), name)


FUSIONS: dict[str, FusionKind] = {}
"""The fusion kinds, by name: the one list (``--fusion`` choices, the model's fusion module, the report's rows)."""


def register_fusion(kind: FusionKind) -> FusionKind:
    """Add a fusion kind to :data:`FUSIONS` (a name taken already is an error)."""
    if kind.name in FUSIONS:
        raise ValueError(f"fusion kind {kind.name!r} is registered already")
    FUSIONS[kind.name] = kind
    return kind


def fusion_help() -> str:
    """The ``--fusion`` help text: each registered kind and what it is."""
    return "; ".join(f"{k.name}: {k.help}" for k in FUSIONS.values())


register_fusion(FusionKind("gated", "gbvnet.models.fusion.GatedAttentionFusion", "face+bio (gated)", gates=True,
                           help="cross-attention both ways, then the gate (GBV-Net)"))
register_fusion(FusionKind("attn-concat", "gbvnet.models.fusion.AttentionConcatFusion",
                           "face+bio (cross-attention + concat)", gates=False,
                           help="the same cross-attention, then concatenation instead of the gate"))
register_fusion(FusionKind("concat", "gbvnet.models.fusion.ConcatFusion", "face+bio (concat, no cross-attention)",
                           gates=False, help="pooled features concatenated, no cross-attention"))


@dataclass
class FusionConfig:
    kind: str = "gated"  # a FUSIONS name
    dim: int = 128  # shared width d of both modalities
    heads: int = 4  # cross-modal attention heads
    gate_hidden: int = 128  # our choice: gate MLP hidden width
    dropout: float = 0.2

    def validate(self) -> None:
        if self.kind not in FUSIONS:
            raise ConfigError(f"fusion.kind must be one of {tuple(FUSIONS)}, got {self.kind!r}")
        for name in ("dim", "heads", "gate_hidden"):
            _positive(f"fusion.{name}", getattr(self, name))
        if self.dim % self.heads:
            raise ConfigError(f"fusion.dim ({self.dim}) must be divisible by fusion.heads ({self.heads})")
        _fraction("fusion.dropout", self.dropout)


@dataclass(frozen=True)
class ModelKind:
    """One network of the model registry (``--model``): GBV-Net or a comparison network from the field's
    reference implementations, trained by the same loop on the same folds.

    ``builder`` is the dotted path of a function ``build(cfg: ModelConfig, **options) -> nn.Module`` whose module's
    ``forward(face=None, bio=None)`` returns ``{"logits": (B, num_classes)}``; it is imported on first use, so this
    registry stays free of torch. ``net`` are the network's own keyword arguments (``ModelConfig.net`` overrides
    them); ``channels`` is what it reads by default (``eeg``: the cache's EEG electrodes, ``all``: every bio
    channel).
    """

    name: str
    builder: str  # "package.module.function"
    modalities: tuple[str, ...]  # the modalities it can take; the first is its default
    channels: str  # default --channels: "all" or "eeg"
    label: str  # its row in the benchmark's tables
    help: str  # one line for the --model help
    options: dict = field(default_factory=dict)  # keyword arguments of the builder (which network)
    net: dict = field(default_factory=dict)  # the network's own default keyword arguments
    # The network's own search dimensions (our choices): argument -> a list of choices, or ("uniform" |
    # "loguniform", low, high); searched as model.net.<argument> beside the optimiser (gbvnet.search.space.model_space).
    search: dict = field(default_factory=dict)

    def build(self, cfg: ModelConfig):
        """The ``nn.Module`` of ``cfg`` (the builder imported now)."""
        package, _, name = self.builder.rpartition(".")
        return getattr(importlib.import_module(package), name)(cfg, **self.options)


MODELS: dict[str, ModelKind] = {}
"""The model registry, by name: the one list (``--model`` choices, the network a worker builds, the benchmark's
rows)."""


def register_model(kind: ModelKind) -> ModelKind:
    """Add a network to :data:`MODELS` (a name taken already is an error)."""
    if kind.name in MODELS:
        raise ValueError(f"model {kind.name!r} is registered already")
    if not kind.modalities or set(kind.modalities) - set(MODALITIES) or kind.channels not in CHANNEL_SETS:
        raise ValueError(f"model {kind.name!r}: modalities must be among {MODALITIES}, channels one of "
                         f"{CHANNEL_SETS}")
    MODELS[kind.name] = kind
    return kind


def get_model(name: str) -> ModelKind:
    """The registered network ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None


def model_help() -> str:
    """The ``--model`` help text: each registered network and what it takes."""
    return "; ".join(f"{k.name}: {k.help} ({'/'.join(k.modalities)})" for k in MODELS.values())


CHANNEL_SETS = ("eeg", "all")  # --channels: the cache's EEG electrodes, or every bio channel (else channel names)

_BRAINDECODE = "gbvnet.models.comparison.braindecode_network"
register_model(ModelKind("gbvnet", "gbvnet.models.gbvnet.GBVNet", ("facebio", "bio", "face"), "all", "GBV-Net",
                         help="GBV-Net (face ConvNeXt V2 + temporal Transformer, Local-Medium-Global bio, fusion)"))
register_model(ModelKind("eegnet", _BRAINDECODE, ("bio",), "eeg", "EEGNet", options={"network": "EEGNet"},
                         search={"F1": [4, 8, 16], "D": [1, 2], "drop_prob": ("uniform", 0.1, 0.6)},
                         help="EEGNet (Lawhern et al. 2018; braindecode)"))
register_model(ModelKind("shallow", _BRAINDECODE, ("bio",), "eeg", "ShallowFBCSPNet",
                         options={"network": "ShallowFBCSPNet"},
                         search={"n_filters_time": [20, 40, 60], "n_filters_spat": [20, 40, 60], "drop_prob": ("uniform", 0.1, 0.6)},
                         help="ShallowFBCSPNet (Schirrmeister et al. 2017; braindecode)"))
register_model(ModelKind("deep4", _BRAINDECODE, ("bio",), "eeg", "Deep4Net", options={"network": "Deep4Net"},
                         search={"drop_prob": ("uniform", 0.1, 0.6)},
                         help="Deep4Net (Schirrmeister et al. 2017; braindecode)"))
register_model(ModelKind("eegconformer", _BRAINDECODE, ("bio",), "eeg", "EEGConformer",
                         options={"network": "EEGConformer"},
                         search={"n_filters_time": [20, 40], "num_layers": [2, 4, 6], "drop_prob": ("uniform", 0.1, 0.6)},
                         help="EEG Conformer (Song et al. 2023; braindecode)"))
register_model(ModelKind("tsception", _BRAINDECODE, ("bio",), "eeg", "TSception", options={"network": "TSception"},
                         search={"hidden_size": [16, 32, 64], "drop_prob": ("uniform", 0.1, 0.6)},
                         help="TSception (Ding et al. 2022, designed for emotion recognition; braindecode)"))
register_model(ModelKind("dgcnn", _BRAINDECODE, ("bio",), "eeg", "DGCNN",
                         options={"network": "DGCNN", "positions": True},
                         search={"cheb_order": [2, 3], "drop_prob": ("uniform", 0.1, 0.6)},
                         help="DGCNN, the dynamical graph network (Song et al. 2018; braindecode; electrode "
                              "positions from MNE's standard 10-20 montage)"))
register_model(ModelKind("facecnn", "gbvnet.models.comparison.FaceCNN", ("face",), "all", "face CNN",
                         net={"backbone": "resnet18", "dropout": 0.2}, search={"dropout": ("uniform", 0.0, 0.5)},
                         help="a timm image CNN per frame, features averaged over the frames (face only)"))


@dataclass
class ModelConfig:
    modality: str = "facebio"  # face | bio | facebio
    num_classes: int = 2
    face: FaceConfig = field(default_factory=FaceConfig)
    bio: BioConfig = field(default_factory=BioConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    name: str = "gbvnet"  # the network (a MODELS name)
    # The bio channels it reads: () its network's default, ("eeg",), ("all",) or channel names; fitted to the
    # cache's channel names, in the cache's order, by gbvnet.train.loop.fit_model_to_cache.
    channels: tuple[str, ...] = ()
    net: dict = field(default_factory=dict)  # a comparison network's keyword arguments (over its registry's)

    @property
    def kind(self) -> ModelKind:
        """Its entry of the model registry."""
        return get_model(self.name)

    @property
    def network_arguments(self) -> dict:
        """The comparison network's keyword arguments: the registry's defaults with :attr:`net` over them."""
        return {**self.kind.net, **self.net}

    def validate(self) -> ModelConfig:
        kind = self.kind
        if self.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.modality not in kind.modalities:
            raise ConfigError(f"model {self.name!r} takes modality {' or '.join(kind.modalities)}, not "
                              f"{self.modality!r}")
        if self.name == "gbvnet" and self.net:
            raise ConfigError(f"net {self.net!r}: keyword arguments of comparison networks; GBV-Net's sizes are "
                              "its face / bio / fusion sections")
        _positive("num_classes", self.num_classes)
        if self.modality in ("face", "facebio"):
            self.face.validate()
        if self.modality in ("bio", "facebio"):
            self.bio.validate()
        self.fusion.validate()
        return self


@dataclass
class PrepareConfig:
    """How raw trials become cached windows (``python -m gbvnet.prepare``)."""

    window: float = 3.0  # seconds, our choice
    stride: float = 3.0  # seconds
    rate: float = 128.0  # Hz after resampling (DEAP is already 128 Hz)
    l_freq: float | None = None  # band-pass low edge (Hz); None = no high-pass
    h_freq: float | None = 45.0  # band-pass high edge (Hz); None = no low-pass
    frames: int = 8  # face frames per window
    face_size: int = 64  # face crop side in pixels
    threshold: float = 5.0  # rating > threshold is "high"
    baseline_norm: bool = False  # DEAP: z-score each trial with its 3 s pre-stimulus baseline
    # The dataset reader's own options (AMIGOS: which videos), by name; declared, with their defaults and
    # choices, by the dataset's registry entry (gbvnet.data.registry.ReaderOption) and passed to its reader.
    reader: dict[str, str] = field(default_factory=dict)

    def validate(self) -> PrepareConfig:
        for name in ("window", "stride", "rate", "frames", "face_size"):
            _positive(name, getattr(self, name))
        if self.h_freq is not None and self.h_freq >= self.rate / 2:
            raise ConfigError(f"h_freq ({self.h_freq} Hz) must be below Nyquist ({self.rate / 2} Hz)")
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ConfigError(f"l_freq ({self.l_freq}) must be below h_freq ({self.h_freq})")
        if not 1.0 <= self.threshold < 9.0:
            raise ConfigError(f"threshold must be within the 1-9 rating scale, got {self.threshold}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.reader.items()):
            raise ConfigError(f"reader options must map names to strings, got {self.reader!r}")
        return self

    @property
    def window_samples(self) -> int:
        return int(round(self.window * self.rate))


@dataclass
class TrainConfig:
    """One training run (``gbvnet.train.loop``). Optimiser defaults follow PAPER.md (our choices)."""

    target: str = "valence"
    epochs: int = 50
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    class_weights: bool = False  # class-balanced cross-entropy
    patience: int = 8  # early stopping on validation macro-F1
    seed: int = 0
    augment: bool = True
    num_workers: int = 1  # Ray Train workers (DDP when > 1)
    cpus_per_worker: float = 1.0  # CPUs Ray reserves per worker; torch runs that many threads (at least 1)
    gpus_per_worker: float | None = None  # None: 1 when the cluster has (or autoscales to) GPUs, else 0; a share
    #                                       (0.25) packs several one-worker trials/folds onto one GPU
    compile: bool | None = None  # torch.compile the model; None: on CUDA only (where it pays)
    max_failures: int = 0

    def validate(self) -> TrainConfig:
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {self.target!r}")
        for name in ("epochs", "batch_size", "lr", "patience", "num_workers"):
            _positive(name, getattr(self, name))
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.max_failures < -1:
            raise ConfigError("weight_decay and warmup_epochs must be >= 0, max_failures >= -1")
        _fraction("label_smoothing", self.label_smoothing)
        _positive("cpus_per_worker", self.cpus_per_worker)
        gpus = self.gpus_per_worker
        if gpus is not None:
            if gpus < 0:
                raise ConfigError(f"gpus_per_worker must be >= 0, got {gpus!r}")
            if gpus > 1 and gpus != int(gpus):
                raise ConfigError(f"gpus_per_worker above 1 must be a whole number of GPUs, got {gpus!r}")
            if 0 < gpus < 1 and self.num_workers > 1:
                raise ConfigError(f"gpus_per_worker {gpus!r} is a GPU share, but {self.num_workers} workers train "
                                  "together (DDP needs a GPU per worker): use a share with one worker, or >= 1")
        return self


PRESETS: dict[str, Callable[[], ModelConfig]] = {}
"""The model presets, by name: the one list (``--preset`` choices, :func:`model_preset`); each builds a fresh
:class:`ModelConfig`."""


def register_preset(name: str):
    """Decorator: add a function returning a fresh :class:`ModelConfig` to :data:`PRESETS` as ``name`` (a name
    taken already is an error)."""
    def register(build: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        if name in PRESETS:
            raise ValueError(f"preset {name!r} is registered already")
        PRESETS[name] = build
        return build
    return register


@register_preset("smoke")
def smoke_preset() -> ModelConfig:
    """A tiny model for CPU tests."""
    return ModelConfig(
        face=FaceConfig(frames=4, image_size=64, dim=32, depth=1, heads=2, dropout=0.0),
        bio=BioConfig(local_channels=16, tcn_channels=16, tcn_dilations=(1, 2), attn_heads=2, dim=32, dropout=0.0),
        fusion=FusionConfig(dim=32, heads=2, gate_hidden=32, dropout=0.0),
    )


@register_preset("paper")
def paper_preset() -> ModelConfig:
    """The sizes we use to reproduce the paper."""
    return ModelConfig(face=FaceConfig(backbone="convnextv2_nano", image_size=112))


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The :data:`PRESETS` entry ``name`` (``smoke``: tiny CPU model for tests; ``paper``: the sizes we use to
    reproduce the paper) with ``overrides``, validated.

    Keyword overrides: ``model`` (a :data:`MODELS` name), ``modality`` (None: the model's default), ``fusion``
    (kind), ``channels``, ``bio_channels``, ``bio_samples``, ``frames``, ``image_size``.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    mapping = {"modality": ("modality",), "fusion": ("fusion", "kind"), "bio_channels": ("bio", "channels"),
               "bio_samples": ("bio", "samples"), "frames": ("face", "frames"), "image_size": ("face", "image_size"),
               "model": ("name",), "channels": ("channels",)}
    if overrides.get("modality", "") is None:  # the network's default modality
        overrides["modality"] = get_model(overrides.get("model", cfg.name)).modalities[0]
    for key, value in overrides.items():
        if key not in mapping:
            raise ConfigError(f"unknown override {key!r}; known: {sorted(mapping)}")
        *parents, leaf = mapping[key]
        target = cfg
        for p in parents:
            target = getattr(target, p)
        setattr(target, leaf, value)
    return cfg.validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (tuples as lists) fit for YAML, JSON and MLflow params."""
    return yaml.safe_load(yaml.safe_dump(_plain(dataclasses.asdict(cfg))))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from a (possibly partial) dict; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current):
            kwargs[name] = from_dict(type(current), value)
        elif isinstance(current, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (for example the best config written by ``tune/search.py``): a path or a URI."""
    try:
        data = yaml.safe_load(read_text(str(path)))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
