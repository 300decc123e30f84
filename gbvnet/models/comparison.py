"""Comparison networks of the model registry (:data:`gbvnet.config.MODELS`), built from the field's reference
implementations: braindecode's EEG networks on the bio input, and a timm image CNN on the face frames.

Each is wrapped to GBV-Net's interface: ``forward(face=None, bio=None)`` returns ``{"logits": (B, num_classes)}``,
so the training loop, the folds and the scoring are the same for every model. Their input sizes come from the
cache (:func:`gbvnet.train.loop.fit_model_to_cache`: channels, samples, rate, frames, image size); their own keyword
arguments from the registry entry with ``ModelConfig.net`` over them.

braindecode is imported on first use (it takes seconds), with its import-time deprecation warnings silenced.

Example:
    >>> import torch
    >>> from gbvnet.config import model_preset
    >>> cfg = model_preset("smoke", model="eegnet", modality=None, bio_channels=4, bio_samples=128)
    >>> tuple(braindecode_network(cfg, "EEGNet")(bio=torch.zeros(2, 4, 128))["logits"].shape)
    (2, 2)
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import warnings

import torch
from torch import nn

from gbvnet.config import ConfigError, ModelConfig, from_dict, to_dict

MONTAGE = "standard_1020"  # MNE's template positions for 10-20 / 10-10 electrode names


@contextlib.contextmanager
def _quiet():
    """braindecode's import and its networks' defaults warn, through Python and MNE's logger, about names renamed in
    their next releases (MNE montages, EEGNet's final layer): nothing a gbvnet user can act on."""
    import mne

    with warnings.catch_warnings(), mne.utils.use_log_level("error"):
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _braindecode_models():
    with _quiet():
        import braindecode.models

    return braindecode.models


@functools.cache
def montage_positions() -> dict[str, object]:
    """MNE's template montage, by lower-case electrode name: the names that count as EEG (``--channels eeg``)."""
    import mne

    with _quiet():  # the template's name changes in a later MNE
        montage = mne.channels.make_standard_montage(MONTAGE)
    return {name.lower(): name for name in montage.ch_names}


def channel_info(channels: list[str], sfreq: float) -> list[dict]:
    """MNE's channel descriptions (with template 10-20 positions) of ``channels``: what graph networks need."""
    import mne

    missing = [c for c in channels if c.lower() not in montage_positions()]
    if missing:
        raise ConfigError(f"channels {', '.join(missing)} have no electrode position in MNE's {MONTAGE} montage; "
                          "a graph network needs one per channel: use --channels eeg")
    info = mne.create_info(list(channels), sfreq, "eeg")
    with _quiet():
        info.set_montage(MONTAGE, match_case=False)
    return info["chs"]


class BioNetwork(nn.Module):
    """A network on the bio input ``(B, C, T)`` only, as the registry's models are called."""

    def __init__(self, network: nn.Module, name: str):
        super().__init__()
        self.network, self.name = network, name

    def forward(self, face: torch.Tensor | None = None, bio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if bio is None or face is not None:
            raise ValueError(f"model {self.name!r} takes the bio input only")
        return {"logits": self.network(bio)}


def braindecode_network(cfg: ModelConfig, network: str, positions: bool = False) -> BioNetwork:
    """braindecode's ``network`` on ``cfg``'s bio input (``n_chans``, ``n_times``, ``sfreq``, ``n_outputs``; with
    ``positions``, the electrodes' template positions as ``chs_info``) with ``cfg.network_arguments``."""
    kwargs = {"n_chans": cfg.bio.channels, "n_times": cfg.bio.samples, "sfreq": cfg.bio.rate,
              "n_outputs": cfg.num_classes, **cfg.network_arguments}
    if positions:
        kwargs["chs_info"] = channel_info(list(cfg.channels), cfg.bio.rate)
    with _quiet():
        return BioNetwork(getattr(_braindecode_models(), network)(**kwargs), cfg.name)


class FaceCNN(nn.Module):
    """The face-only comparison: a timm image CNN (``net.backbone``) on every frame, its pooled features averaged
    over the frames, dropout and a linear classifier. Its backbone starts from timm's pretrained weights or a
    checkpoint file as GBV-Net's face branch does (``face.pretrained`` / ``face.checkpoint``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        import timm

        args = cfg.network_arguments
        self.backbone = timm.create_model(args["backbone"], pretrained=cfg.face.pretrained, num_classes=0)
        if cfg.face.checkpoint:
            state = torch.load(cfg.face.checkpoint, map_location="cpu", weights_only=True)
            self.backbone.load_state_dict(state, strict=False)
        self.head = nn.Sequential(nn.Dropout(args["dropout"]), nn.Linear(self.backbone.num_features, cfg.num_classes))

    def forward(self, face: torch.Tensor | None = None, bio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if face is None or bio is not None:
            raise ValueError("model 'facecnn' takes the face input only")
        b, f = face.shape[:2]
        features = self.backbone(face.flatten(0, 1)).view(b, f, -1).mean(1)
        return {"logits": self.head(features)}


def check_input_fits(cfg: ModelConfig) -> None:
    """Build ``cfg``'s network and run it once on zeros of its input size; a network that cannot take that window
    (kernels or pooling longer than the window: braindecode raises deep inside) is a :class:`ConfigError` naming
    the model, the window and the shortest window it takes. Checked once per configuration."""
    _check(json.dumps(to_dict(cfg), sort_keys=True))


@functools.cache
def _check(config: str) -> None:
    cfg = from_dict(ModelConfig, json.loads(config))
    if cfg.modality != "bio":
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        fits = _runs(cfg, cfg.bio.samples)
    for warning in caught:  # braindecode adapts some networks to short windows (Deep4Net scales its kernels)
        if issubclass(warning.category, UserWarning):
            warnings.warn(f"model {cfg.name!r}: {str(warning.message).strip()}", UserWarning, stacklevel=3)
    if fits:
        return
    longest = cfg.bio.samples * 64
    if not _runs(cfg, longest):
        raise ConfigError(f"model {cfg.name!r} cannot be built for {cfg.bio.channels} channels x "
                          f"{cfg.bio.samples} samples, nor for longer windows: check its net arguments "
                          f"{cfg.network_arguments}")
    low, high = cfg.bio.samples, longest  # fails at low, runs at high: the shortest window is in (low, high]
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _runs(cfg, middle) else (middle, high)
    rate = cfg.bio.rate
    raise ConfigError(f"model {cfg.name!r} cannot take {cfg.bio.samples / rate:g} s windows ({cfg.bio.samples} "
                      f"samples at {rate:g} Hz): it needs at least {high} samples ({high / rate:.3g} s); prepare "
                      f"the cache with a longer --window")


def _runs(cfg: ModelConfig, samples: int) -> bool:
    cfg = copy.deepcopy(cfg)
    cfg.bio.samples = samples
    try:
        with torch.no_grad():
            cfg.kind.build(cfg).eval()(bio=torch.zeros(2, cfg.bio.channels, samples))
    except ConfigError:
        raise
    except (RuntimeError, ValueError, AssertionError, IndexError):
        return False
    return True
