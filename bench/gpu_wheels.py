"""Build the folder of wheels that makes a bare GPU machine (the team's CUDA image) a Ray node for the benches.

The image has Python 3.12, torch, timm, numpy, pyarrow, pandas, grpcio, msgpack, protobuf, OpenCV, scikit-learn
and more (:data:`IMAGE`), but no Ray, MLflow, Optuna or mne, and nothing can be downloaded there. What travels
with the working tree (the device tool carries ignored paths) must stay well under 64 MiB, and Ray's wheel alone
is ~79 MB, 31 MB of it Java jars (used only by Java workers) and 2 MB RLlib. This script:

1. downloads Ray's cp312 manylinux wheel for the Ray version installed here and repacks it without ``ray/jars``,
   ``ray/rllib`` and the dashboard's web pages (:data:`DROP`: their files and their ``RECORD`` lines);
2. walks the requirements of ``ray[tune,train]``, ``optuna`` and ``mlflow-skinny`` (the MLflow client and its
   file/SQLite stores, without the server) in this environment, at the versions installed here, leaves out what
   the image already has (and :data:`UNUSED`), and downloads each missing one as a cp312 wheel (``--no-deps``);
3. prints the folder's size and each wheel's.

Redo it for each new Ray version. The lead's one command on the GPU machine is ``bash bench/gpu_run.sh``, which
installs the folder with ``pip install --target`` into a temporary directory and runs ``bench/ray_gpu.py``.

    python -m bench.gpu_wheels [--out .whl/gpu]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The distributions of the GPU machine's image (the device notes' list, 2026-11-17; the same for H100 and H200).
IMAGE = set(map(canonicalize_name, """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow
pybind11 py-cpuinfo pygments pyre-extensions pyparsing pyproject-hooks pytest pytest-benchmark pytest-cov
pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()))

# What the benches import on the GPU machine: Ray with Tune and Train, Optuna (tune/search.py), the MLflow client.
ROOTS = ["ray[tune,train]", "optuna", "mlflow-skinny"]
# Required by google-auth (which MLflow imports through databricks-sdk) for its signing code only, which neither an
# evaluation nor a search imports (checked by running their imports with every other package hidden).
# (cryptography itself stays: MLflow's SQLite store imports it.)
UNUSED = {"pyasn1", "pyasn1-modules"}
# Ray's folders that the benches never load: Java workers' jars, RLlib, and the dashboard's web pages (the benches
# start Ray without its dashboard).
DROP = ("ray/jars/", "ray/rllib/", "ray/dashboard/client/")
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython"}
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi",
            "none", "--only-binary=:all:", *[a for p in ("manylinux2014_x86_64", "manylinux_2_17_x86_64",
                                                          "manylinux_2_28_x86_64", "any") for a in ("--platform", p)]]


def missing_requirements(roots: list[str], image: set[str]) -> dict[str, str]:
    """Name -> installed version of every distribution that ``roots`` need (recursively, with their extras, for
    CPython 3.12 on Linux) and the image lacks."""
    env = {**default_environment(), **TARGET}
    needed: dict[str, str] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in image or name in needed:
            continue
        dist = metadata.distribution(req.name)
        needed[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in req.extras or [""]):
                todo.append(sub)
    return needed


def download(specs: list[str], folder: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM, "-d", str(folder),
                    *specs], check=True)


def slim(wheel: Path, out: Path, drop: tuple[str, ...] = DROP) -> Path:
    """``wheel`` repacked into ``out`` without the files under ``drop`` and their ``RECORD`` lines."""
    target = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.startswith(drop):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if not line.startswith(drop)) + "\n").encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return target


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_wheels", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".whl/gpu", help="the folder of wheels (emptied first)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    needed = missing_requirements(ROOTS, IMAGE | UNUSED)
    ray_version = needed.pop("ray")
    with tempfile.TemporaryDirectory() as tmp:
        download([f"ray=={ray_version}"], Path(tmp))
        slim(next(Path(tmp).glob("ray-*.whl")), out)
    download([f"{name}=={version}" for name, version in sorted(needed.items())], out)
    wheels = sorted(out.glob("*.whl"), key=lambda w: -w.stat().st_size)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    total = sum(w.stat().st_size for w in wheels)
    print(f"{total / 2**20:7.2f} MiB  in {len(wheels)} wheels, {out}/ (carry it: the device tool's limit is 64 MiB "
          "with the working tree)")
    found = {canonicalize_name(re.split(r"-\d", w.name, maxsplit=1)[0]) for w in wheels}
    lost = sorted(set(needed) - found)
    if lost:
        raise SystemExit(f"no cp312 wheel downloaded for {lost}")
    return out


if __name__ == "__main__":
    main()
