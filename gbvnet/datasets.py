"""The datasets the front-ends (``evaluation.*``, ``tune/search.py``) offer, and where a run's window cache comes
from: a prepared cache, a real download, or a synthetic corpus.

``--synthetic`` writes a small corpus in the dataset's official layout once (``data/synthetic/<dataset>``) and
prepares it with the real readers; ``--root`` prepares a user's download (incrementally: unchanged subjects are
not redone); ``--cache`` alone uses an existing cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

DATASETS = ("deap", "mahnob")  # gbvnet.prepare.READERS holds their readers

# The demo corpus: small enough for a LOSO run on 2 CPU cores within minutes, large enough to learn from (MAHNOB:
# 6 subjects x 10 trials of 24 s = 80 windows per subject; 6 subjects let a one-sided Wilcoxon test reach p < 0.05).
SYNTHETIC_SIZE = {"mahnob": {"subjects": 6, "trials": 10, "duration": 24.0}, "deap": {"subjects": 4, "trials": 8}}
# Its preparation: the dataset's defaults (gbvnet.prepare.dataset_config) with 2 face frames of 32 x 32 (the face
# branch costs ~20x the bio branch per window on a CPU) and each trial's signals z-scored by its pre-stimulus
# baseline, which removes the per-subject offsets that the synthetic subjects (like real ones) carry.
SYNTHETIC_PREPARE = {"frames": 2, "face_size": 32, "baseline_norm": True}


def resolve_cache(dataset: str, *, root: str | None, synthetic: bool, cache: str | None,
                  on_error: str = "fail", need_face: bool = True) -> str:
    """Return the cache location to evaluate on, preparing it first (dataset defaults) where needed."""
    from gbvnet.prepare import dataset_config, prepare_dataset

    if synthetic:
        from gbvnet.data import synthetic as gen

        root_path = Path("data/synthetic") / dataset
        if not root_path.exists():  # written under a temporary name: an interrupted write is never reused
            partial = root_path.with_name(root_path.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            writer = gen.write_mahnob if dataset == "mahnob" else gen.write_deap
            writer(partial, **SYNTHETIC_SIZE[dataset], seed=0)
            partial.rename(root_path)
        root = str(root_path)
        cache = cache or f"data/cache/{dataset}-synthetic"
    if root is not None:
        cache = cache or f"data/cache/{dataset}"
        prepare = dataset_config(dataset, **(SYNTHETIC_PREPARE if synthetic else {}))
        prepare_dataset(dataset, root, cache, prepare, on_error=on_error, face=need_face)
    if cache is None:
        raise ValueError("give --root (a dataset download), --synthetic, or --cache (a prepared window cache)")
    return cache
