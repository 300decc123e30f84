"""The model that leaves gbvnet: a trained network and everything needed to turn a raw recording into its input,
logged as an MLflow model (``mlflow.pyfunc`` with the python model :class:`GBVNetModel`).

What travels with the weights (:class:`ModelSpec`, the artifact ``gbvnet_model.json``): the model config (input
sizes fitted to the training cache; the network is built by :func:`gbvnet.models.build_model`), the target, the
dataset and its preparation config (window, stride, rate, filters, baseline normalisation, face frames and crop
size, the label threshold, the reader's options), the channel names in their order, the training rows'
normaliser statistics, the manifest hash of the cache it was trained on, its subjects, and the model format
version and git commit of the gbvnet that logged it. A model of another format version is refused when loaded
(:class:`ModelMismatch`, one line saying what to do).

Windows in, probabilities out::

    model = mlflow.pyfunc.load_model("models:/gbvnet-deap-valence@champion")
    p = model.predict({"bio": windows})  # (n, C, T) float32 as the window cache holds them -> (n, 2) float32

Inputs are the modality's windows as :mod:`gbvnet.data.cache` stores them (``bio`` prepared but not normalised,
``face`` ``uint8`` crops ``(n, frames, size, size, 3)``); the model normalises them as in training
(:class:`~gbvnet.data.transform.BatchTransform` with the training normaliser) and returns the class probabilities
(column 1: a rating above the threshold). The signature says so, with an input example of two training windows,
so ``mlflow models serve`` takes ``{"inputs": {"bio": [...]}}`` and answers ``{"predictions": [[p0, p1], ...]}``.
``python -m gbvnet.predict`` prepares a raw recording into such windows (:mod:`gbvnet.predict.cli`).

Logging (:func:`log_trained`) works on an existing MLflow run through the store's URI, like the rest of
:mod:`gbvnet.tracking`: the model is an MLflow logged model of that run, registered under a name with aliases on
request. The model needs gbvnet installed where it is loaded (its code is not copied into the model).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

from gbvnet.config import ModelConfig, PrepareConfig, from_dict, get_model, to_dict
from gbvnet.data.cache import open_cache
from gbvnet.data.transform import BatchTransform
from gbvnet.data.window_dataset import Normalizer, WindowDataset, fit_normalizer
from gbvnet.models import build_model
from gbvnet.tracking import git_commit
from gbvnet.train.loop import Job, channel_index

FORMAT_VERSION = 1
"""The model format this gbvnet writes and reads: raised whenever :class:`ModelSpec` or the weights change
meaning, so an older model is refused with a line instead of predicting wrongly."""
SPEC_FILE = "gbvnet_model.json"
WEIGHTS_FILE = "weights.pt"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # the model-from-code MLflow runs to load a model
BATCH_SIZE = 256  # windows per forward pass of predict() (the ``batch_size`` parameter)


class ModelMismatch(ValueError):
    """A model that cannot be applied as asked: logged by another gbvnet model format, or given data its training
    data differs from (other channels, rate, preparation options, no face video for a face model)."""


@dataclass
class ModelSpec:
    """Everything besides the weights that a logged model needs to prepare and read a recording."""

    format_version: int
    model: dict  # ModelConfig (to_dict), input sizes fitted to the training cache
    target: str  # valence | arousal
    dataset: str  # the training cache's dataset (its reader)
    prepare: dict  # the training cache's PrepareConfig (to_dict): window, rate, filters, threshold, faces, ...
    channels: list[str]  # the training cache's bio channels, in its order: the windows' (the network reads
    # model["channels"] among them, selected after normalisation as in training: gbvnet.train.loop.channel_index)
    normalizer_mean: list[float] | None  # per channel, fitted on the training rows (None: face-only model)
    normalizer_std: list[float] | None
    cache_manifest_hash: str  # the training cache snapshot
    subjects: list[int]  # the subjects trained on (training and early-stopping rows)
    gbvnet_commit: str  # the code that logged it

    @property
    def modality(self) -> str:
        return self.model["modality"]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The windows the network reads: ``bio``, ``face`` or both."""
        return {"bio": ("bio",), "face": ("face",), "facebio": ("bio", "face")}[self.modality]

    def model_config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.model).validate()

    def prepare_config(self) -> PrepareConfig:
        return from_dict(PrepareConfig, self.prepare).validate()

    def normalizer(self) -> Normalizer | None:
        if self.normalizer_mean is None:
            return None
        return Normalizer(np.asarray(self.normalizer_mean, np.float32), np.asarray(self.normalizer_std, np.float32),
                          np.zeros(0, np.int64))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each input's window shape (without the batch dimension)."""
        cfg = self.prepare_config()
        shapes = {"bio": (len(self.channels), cfg.window_samples), "face": (cfg.frames, cfg.face_size, cfg.face_size, 3)}
        return {k: shapes[k] for k in self.inputs}

    def signature(self) -> ModelSignature:
        """Windows in (float32 ``bio``, uint8 ``face``: the modality's), class probabilities out, and the
        ``batch_size`` parameter."""
        dtypes = {"bio": np.float32, "face": np.uint8}
        inputs = Schema([TensorSpec(np.dtype(dtypes[k]), (-1, *shape), k) for k, shape in self.shapes().items()])
        outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, self.model["num_classes"]))])
        return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("batch_size", "long", BATCH_SIZE)]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path, where: str) -> ModelSpec:
        """The spec at ``path``; one of another format version (or not a gbvnet model) is a :class:`ModelMismatch`
        naming ``where`` and saying what to do."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ModelMismatch(f"{where}: no readable {SPEC_FILE} ({exc}); not a model logged by gbvnet") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise ModelMismatch(
                f"{where}: logged by gbvnet model format {version} (code {data.get('gbvnet_commit', 'unknown')}); "
                f"this gbvnet reads format {FORMAT_VERSION}: train and log it again with this gbvnet "
                "(python -m gbvnet.train ... --register NAME), or predict with the gbvnet that logged it")
        return cls(**data)


class GBVNetModel(mlflow.pyfunc.PythonModel):
    """The pyfunc python model: windows in, class probabilities out (see the module docstring).

    ``mlflow.pyfunc.load_model(uri, model_config={"device": "cpu"})`` chooses the device (default: CUDA where
    available); ``unwrap_python_model()`` gives this object, whose :attr:`spec`, :attr:`transform` and
    :meth:`probabilities` ``gbvnet.predict`` uses on batches already on the device.
    """

    # the signature logged with the model is its schema: MLflow's type-hint validation (and its warning that
    # predict has no type hints) is off, as for MLflow's own ChatModel subclasses
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.spec = ModelSpec.load(context.artifacts["spec"], where=str(Path(context.artifacts["spec"]).parent))
        device = (context.model_config or {}).get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        self.network = build_model(self.spec.model_config())
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.network.load_state_dict(state)
        self.network.to(self.device).eval()
        # the spec's channels are the training cache's: the network reads its own among them, as in training
        self.transform = BatchTransform(self.spec.modality, self.device, self.spec.normalizer(),
                                        channel_index(self.spec.model_config(), self.spec))

    @torch.inference_mode()
    def probabilities(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``(n, classes)`` of a batch of cached windows on :attr:`device`."""
        return torch.softmax(self.network(**self.transform(batch))["logits"].float(), dim=1)

    def predict(self, context, model_input, params=None):  # untyped: MLflow would read a schema into type hints
        """``(n, classes)`` float32 probabilities of the windows ``model_input`` (``{"bio": ..., "face": ...}``,
        the modality's), ``params["batch_size"]`` at a time."""
        missing = [k for k in self.spec.inputs if k not in model_input]
        if missing:
            raise ModelMismatch(f"a {self.spec.modality} model needs the inputs {list(self.spec.inputs)}; "
                                f"missing {missing}")
        arrays = {k: np.asarray(model_input[k]) for k in self.spec.inputs}
        n = len(arrays[self.spec.inputs[0]])
        step = int((params or {}).get("batch_size") or BATCH_SIZE)
        out = np.empty((n, self.spec.model["num_classes"]), np.float32)
        for start in range(0, n, step):
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[start:start + step])).to(self.device)
                     for k, v in arrays.items()}
            out[start:start + step] = self.probabilities(batch).cpu().numpy()
        return out


@contextlib.contextmanager
def mlflow_store(uri: str, experiment_id: str | None = None):
    """MLflow's fluent API (model logging, loading and registration) pointed at the store ``uri`` (and the
    experiment ``experiment_id``) for the body, through MLflow's own environment variables (and no download
    progress bars), restored after."""
    values = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_ID": experiment_id,
              "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    saved = {k: os.environ.get(k) for k in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: dict[str, str | None]) -> None:
    """Set each variable of ``values``; a None value unsets it."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def requirements(spec: ModelSpec) -> list[str]:
    """The packages the code of ``spec``'s model needs (braindecode and mne for the comparison networks built
    with braindecode), at the versions it was logged with (and gbvnet itself, installed from its checkout)."""
    import timm

    versions = {"torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
                "mlflow": mlflow.__version__, "pyyaml": __import__("yaml").__version__,
                "pyarrow": __import__("pyarrow").__version__}
    if get_model(spec.model["name"]).builder.endswith(".braindecode_network"):
        versions.update(braindecode=__import__("braindecode").__version__, mne=__import__("mne").__version__)
    return [f"{name}=={version.split('+')[0]}" for name, version in versions.items()]


@dataclass
class Logged:
    """Where a logged model is: its URI (``models:/<model id>``) and, when registered, its name and version."""

    uri: str
    name: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return self.uri + (f" (registered {self.name} version {self.version})" if self.name else "")


def log_model(tracking_uri: str, run_id: str, state: dict, spec: ModelSpec, example: dict[str, np.ndarray], *,
              register: str | None = None, aliases: tuple[str, ...] = ()) -> Logged:
    """Log the network weights ``state`` with ``spec`` as the MLflow model ``model`` of the run ``run_id`` in the
    store ``tracking_uri`` (signature, the input ``example``), and, with ``register``, register it under that
    name with ``aliases`` (each moved to this version)."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(run_id).info.experiment_id
    with tempfile.TemporaryDirectory(prefix="gbvnet-model-") as folder, mlflow_store(tracking_uri, experiment_id):
        spec_path, weights_path = Path(folder) / SPEC_FILE, Path(folder) / WEIGHTS_FILE
        spec.save(spec_path)
        torch.save(state, weights_path)
        info = Model.log(None, flavor=mlflow.pyfunc, name="model", run_id=run_id, python_model=str(MODEL_CODE),
                         artifacts={"spec": str(spec_path), "weights": str(weights_path)},
                         signature=spec.signature(), input_example=example, pip_requirements=requirements(spec),
                         metadata={"gbvnet_format": FORMAT_VERSION, "modality": spec.modality,
                                   "target": spec.target, "dataset": spec.dataset})
        if not register:
            return Logged(info.model_uri)
        version = mlflow.register_model(info.model_uri, register).version
    for alias in aliases:
        client.set_registered_model_alias(register, alias, str(version))
    return Logged(info.model_uri, register, str(version))


def trained_spec(job: Job, normalizer: Normalizer | None) -> ModelSpec:
    """The spec of a model trained by ``job`` (its cache's preparation, channels and snapshot)."""
    cache = open_cache(job.cache, expect=job.manifest_hash)
    manifest, subjects = cache.manifest, cache.index().subject
    rows = np.concatenate([job.fold.train, job.fold.val])
    return ModelSpec(
        format_version=FORMAT_VERSION, model=to_dict(job.model), target=job.train.target, dataset=manifest.dataset,
        prepare=to_dict(manifest.config), channels=list(manifest.channels),
        normalizer_mean=None if normalizer is None else normalizer.mean.tolist(),
        normalizer_std=None if normalizer is None else normalizer.std.tolist(),
        cache_manifest_hash=job.manifest_hash, subjects=sorted(np.unique(subjects[rows]).tolist()),
        gbvnet_commit=git_commit())


def log_trained(tracking_uri: str, run_id: str, job: Job, state: dict, *, register: str | None = None,
                aliases: tuple[str, ...] = ()) -> Logged:
    """Log the network ``state`` trained by ``job`` (its best epoch's weights, :func:`gbvnet.train.loop.load_state`'s
    ``best_model``) to the run ``run_id``: the training rows' normaliser fitted again (the loop's, exactly: same
    rows, same code), the spec (:func:`trained_spec`), two training windows as the input example."""
    cache = open_cache(job.cache, expect=job.manifest_hash)
    normalizer = fit_normalizer(cache, job.fold.train) if job.model.modality != "face" else None
    spec = trained_spec(job, normalizer)
    batch = WindowDataset(cache, target=job.train.target, modality=job.model.modality).batch(job.fold.train[:2])
    example = {k: batch[k].numpy() for k in spec.inputs}
    return log_model(tracking_uri, run_id, state, spec, example, register=register, aliases=aliases)
