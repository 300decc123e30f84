"""Ray Tune's own cost at a pool's granularity: trials that only spin (one core busy) for given epoch times and
report each epoch, run as the evaluations run their folds (one CPU each, ``slots`` at once, a finished trial's
process reused). Nothing heavy is imported, so its trial processes start as fast as Ray's can: the wall time is
the floor a Tune pool of those folds reaches on the machine, before any model, data or MLflow (bench/gap.py).
"""

from __future__ import annotations

import time

from ray import tune


def spin_trial(config: dict, epochs: list[list[float]]) -> None:
    """Fold ``config["fold"]``: each of its epochs spun for its time, then reported."""
    for seconds in epochs[config["fold"]]:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        tune.report({"spun_s": seconds})


def tune_floor(epochs: list[list[float]], slots: int, storage: str) -> float:
    """Wall seconds of a Tune run of one trial per entry of ``epochs`` (its epochs' seconds), ``slots`` at once,
    on the running Ray instance."""
    trainable = tune.with_resources(tune.with_parameters(spin_trial, epochs=epochs), {"cpu": 1})
    tuner = tune.Tuner(trainable, param_space={"fold": tune.grid_search(list(range(len(epochs))))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=slots, reuse_actors=True),
                       run_config=tune.RunConfig(name="tune-floor", storage_path=storage, verbose=0))
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started
