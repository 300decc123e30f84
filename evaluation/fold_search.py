"""One Tune run for every outer fold's search and training: the searcher and the scheduler of the nested evaluation.

Ray Tune cannot start a Tuner inside a trial, so the nested evaluation (:mod:`evaluation.nested`) runs one Tune
level whose trials belong to different outer folds; each trial's config names its fold (``fold``) and what it is
(``job``: ``inner`` search trial, ``tuned`` or ``untuned`` training of the outer fold; see
:func:`gbvnet.launch.nested_trial`).

:class:`FoldSearcher` keeps one seeded Optuna study per outer fold (its own sampler state: a fold's proposals
depend only on its own trials' scores; the sampler is :func:`gbvnet.space.sampler`'s for the fold's budget: TPE,
or random search where the budget does not pass TPE's random start-up) and hands out, whenever Tune asks for a trial: first the ``tuned`` training
of a fold whose search has finished (with that search's best point), then the next ``inner`` trial of the folds
that still have budget, round-robin (so trials of different folds run side by side up to the concurrency), then
the ``untuned`` trainings (``compare_untuned``). A fold whose every search trial failed gets no ``tuned``
training; the evaluation reports it. The state is saved with Tune's experiment state and restored by
``Tuner.restore`` (:meth:`FoldSearcher.save`, :meth:`FoldSearcher.restore`).

:class:`FoldScheduler` routes each inner trial to its own fold's ASHA instance (early stopping never compares
trials of different folds) and lets the outer trainings run to their own early stopping. ASHA's rung records are
not part of Tune's saved state: after ``--resume`` the folds' ASHA instances start afresh (finished trials stay
finished; the next trials are compared among themselves).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from gbvnet.metrics import SELECTION_METRIC as METRIC
from gbvnet.space import sampler

SCORE = f"best_{METRIC}"  # a trial's best epoch's validation score (gbvnet.loop reports it every epoch)


@dataclass
class FoldState:
    """One outer fold's search: its Optuna study, trials handed out, their scores, and its outer trainings."""

    study: optuna.Study
    budget: int
    asked: int = 0
    running: dict[str, int] = field(default_factory=dict)  # Tune trial id -> Optuna trial number
    scores: dict[int, float] = field(default_factory=dict)  # finished trials: number -> best validation score
    points: dict[int, dict] = field(default_factory=dict)  # number -> sampled point
    tuned: bool = False  # its tuned training was handed out
    untuned: bool = False

    @property
    def searched(self) -> bool:
        return self.asked == self.budget and not self.running

    def best(self) -> int | None:
        """The number of the best finished trial (the first of equals), or None when none finished."""
        return max(self.scores, key=lambda n: (self.scores[n], -n)) if self.scores else None


class FoldSearcher(Searcher):
    """Per-fold searches and the outer trainings, as one stream of Tune trials (see the module docstring)."""

    def __init__(self, space: dict, folds: int, trials: int, seed: int, compare_untuned: bool):
        super().__init__(metric=SCORE, mode="max")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.distributions = OptunaSearch.convert_search_space(space)
        self.folds = [FoldState(optuna.create_study(direction="maximize", sampler=sampler(trials, seed * 10_007 + k)[0]),
                                trials) for k in range(folds)]
        self.compare_untuned = compare_untuned
        self.owner: dict[str, int] = {}  # live inner trial id -> fold
        self.next_fold = 0  # round-robin position

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        for k, state in enumerate(self.folds):
            if state.searched and not state.tuned and state.best() is not None:
                state.tuned = True
                number = state.best()
                return {"fold": k, "job": "tuned", "number": number, **state.points[number]}
        for step in range(len(self.folds)):
            k = (self.next_fold + step) % len(self.folds)
            state = self.folds[k]
            if state.asked < state.budget:
                self.next_fold = (k + 1) % len(self.folds)
                trial = state.study.ask(self.distributions)
                state.asked += 1
                state.running[trial_id], state.points[trial.number] = trial.number, trial.params
                self.owner[trial_id] = k
                return {"fold": k, "job": "inner", "number": trial.number, **trial.params}
        if self.compare_untuned:
            for k, state in enumerate(self.folds):
                if not state.untuned:
                    state.untuned = True
                    return {"fold": k, "job": "untuned", "number": -1}
        if self.owner or any(s.searched and not s.tuned and s.best() is not None for s in self.folds):
            return None  # searches still running: their folds' trainings come later
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        k = self.owner.pop(trial_id, None)
        if k is None:  # an outer training: nothing to learn from it
            return
        state = self.folds[k]
        number = state.running.pop(trial_id)
        if error or not result or SCORE not in result:
            state.study.tell(number, state=optuna.trial.TrialState.FAIL)
            return
        state.scores[number] = float(result[SCORE])
        state.study.tell(number, float(result[SCORE]))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class FoldScheduler(FIFOScheduler):
    """ASHA per outer fold for its inner trials (``ASHAScheduler`` arguments as given); outer trainings run on."""

    def __init__(self, folds: int, **asha):
        super().__init__()
        self.asha = [ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", **asha) for _ in range(folds)]

    def _own(self, trial) -> ASHAScheduler | None:
        return self.asha[trial.config["fold"]] if trial.config.get("job") == "inner" else None

    def on_trial_add(self, tune_controller, trial) -> None:
        if self._own(trial):
            self._own(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        asha = self._own(trial)
        if asha is None:
            return TrialScheduler.CONTINUE
        if trial.trial_id not in asha._trial_info:  # restored by --resume into a fresh scheduler
            asha.on_trial_add(tune_controller, trial)
        return asha.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        asha = self._own(trial)
        if asha is not None and trial.trial_id in asha._trial_info:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        asha = self._own(trial)
        if asha is not None and trial.trial_id in asha._trial_info:
            asha.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.on_trial_remove(tune_controller, trial)
