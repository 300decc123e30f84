"""Where a run's window cache comes from: a prepared cache (``--cache``), a real download prepared into it
(``--root``), or a synthetic corpus in a dataset's official layout (``--synthetic``).

``--synthetic`` writes a small corpus in the dataset's official layout once (``data/synthetic/<dataset>``) and
prepares it with the real readers; ``--root`` prepares a user's download (incrementally: unchanged subjects are
not redone); ``--cache`` alone uses an existing cache. Each dataset's reader, defaults and writer come from the
registry (:mod:`gbvnet.data.registry`).

An existing cache is never replaced by one of other options (:class:`gbvnet.prepare.CacheConflict`, unless
``rebuild``); a command that needs no faces uses a face cache of the same signal options as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gbvnet.data.registry import get_dataset
from gbvnet.prepare.plan import prepare_dataset

# The demo corpus's preparation: the dataset's defaults with 2 face frames of 32 x 32 (the face branch costs ~20x
# the bio branch per window on a CPU) and each trial's signals z-scored by its pre-stimulus baseline, which
# removes the per-subject offsets that the synthetic subjects (like real ones) carry.
SYNTHETIC_PREPARE = {"frames": 2, "face_size": 32, "baseline_norm": True}



def synthetic_cache(dataset: str, root: str | Path, cache: str, *, size: dict[str, Any] | None = None,
                    prepare: dict[str, Any] | None = None, on_error: str = "fail", face: bool = True,
                    progress: bool = True, rebuild: bool = False) -> str:
    """Write a synthetic corpus of ``size`` (default: the demo's) at ``root`` unless one is there, and prepare it
    into ``cache`` (incrementally) with the dataset's defaults and the ``prepare`` overrides; returns ``cache``.

    The corpus is written under a temporary name and renamed when complete: an interrupted write is never reused.
    """
    entry, root = get_dataset(dataset), Path(root)
    if not root.exists():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        entry.write_synthetic(partial, **(entry.demo_size if size is None else size))
        partial.rename(root)
    prepare_dataset(dataset, root, cache, entry.prepare_config(**(prepare or {})), on_error=on_error, face=face,
                    progress=progress, rebuild=rebuild)
    return cache


def resolve_cache(dataset: str, *, root: str | None, synthetic: bool, cache: str | None,
                  on_error: str = "fail", need_face: bool = True, rebuild: bool = False) -> str:
    """Return the cache location to evaluate on, preparing it first (dataset defaults) where needed: with faces
    where ``need_face`` (else a face cache of the same signal options is used as it is); a cache of other options
    is refused unless ``rebuild`` (see :func:`gbvnet.prepare.prepare_dataset`)."""
    if synthetic:
        return synthetic_cache(dataset, Path("data/synthetic") / dataset, cache or f"data/cache/{dataset}-synthetic",
                               prepare=SYNTHETIC_PREPARE, on_error=on_error, face=need_face, rebuild=rebuild)
    if root is not None:
        cache = cache or f"data/cache/{dataset}"
        prepare_dataset(dataset, root, cache, on_error=on_error, face=need_face, rebuild=rebuild)  # the defaults
    if cache is None:
        raise ValueError("give --root (a dataset download), --synthetic, or --cache (a prepared window cache)")
    return cache
