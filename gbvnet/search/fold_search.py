"""One Tune run for every outer fold's search and training: the searcher and the scheduler of the nested evaluation.

Ray Tune cannot start a Tuner inside a trial, so the nested evaluation (:mod:`gbvnet.evaluation.nested`) runs one Tune
level whose trials belong to different outer folds; each trial's config names its fold (``fold``) and what it is
(``job``: ``inner`` search trial, ``tuned`` or ``untuned`` training of the outer fold; see
:func:`gbvnet.train.launch.nested_trial`).

:class:`FoldSearcher` keeps one seeded Optuna study per outer fold (its own sampler state: a fold's proposals
depend only on its own trials' scores; the sampler is :func:`gbvnet.search.space.sampler`'s for the fold's budget: TPE,
or random search where the budget does not pass TPE's random start-up) and hands out, whenever Tune asks for a trial: first the ``tuned`` training
of a fold whose search has finished (with that search's best point), then the next ``inner`` trial of the folds
that still have budget, round-robin (so trials of different folds run side by side up to the concurrency), then
the ``untuned`` trainings (``compare_untuned``). A fold whose every search trial failed gets no ``tuned``
training; the evaluation reports it. A ``tuned`` training that fails (after Tune's own retry of the same
configuration) is handed out again with the fold's next-best finished configuration, at most :data:`RETRIES`
times (a failure that follows the configuration, such as a large model out of memory, would otherwise drop the
fold, and so its subject, non-randomly); a fold whose retries fail too is reported as failed. The state is saved with Tune's experiment state and restored by
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

from gbvnet.search.space import sampler
from gbvnet.train.metrics import SELECTION_METRIC as METRIC

SCORE = f"best_{METRIC}"  # a trial's best epoch's validation score (gbvnet.train.loop reports it every epoch)
RETRIES = 2  # a fold whose tuned training fails is trained with its next-best configurations, at most this many


@dataclass
class FoldState:
    """One outer fold's search: its Optuna study, trials handed out, their scores, and its outer trainings."""

    study: optuna.Study
    budget: int
    asked: int = 0
    running: dict[str, int] = field(default_factory=dict)  # Tune trial id -> Optuna trial number
    scores: dict[int, float] = field(default_factory=dict)  # finished trials: number -> best validation score
    points: dict[int, dict] = field(default_factory=dict)  # number -> sampled point
    tuned: bool = False  # its tuned training was handed out (and has not failed)
    untuned: bool = False
    failed: list[int] = field(default_factory=list)  # configurations (numbers) whose tuned training failed

    @property
    def searched(self) -> bool:
        return self.asked == self.budget and not self.running

    def best(self) -> int | None:
        """The number of the best finished trial (the first of equals) whose tuned training has not failed, or
        None when there is none."""
        left = {n: score for n, score in self.scores.items() if n not in self.failed}
        return max(left, key=lambda n: (left[n], -n)) if left else None

    @property
    def ready(self) -> bool:
        """Whether its tuned training is due: its search is over, none is running, a configuration is left and
        the retries are not spent."""
        return self.searched and not self.tuned and self.best() is not None and len(self.failed) <= RETRIES


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
        self.training: dict[str, tuple[int, int]] = {}  # live tuned training id -> (fold, configuration number)
        self.next_fold = 0  # round-robin position

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        for k, state in enumerate(self.folds):
            if state.ready:
                state.tuned = True
                number = state.best()
                self.training[trial_id] = k, number
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
        if self.owner or self.training or any(s.ready for s in self.folds):
            return None  # searches or trainings still running: trainings (or retries) may come later
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.training:  # a tuned training: if it failed, its fold's next-best configuration is due
            k, number = self.training.pop(trial_id)
            if error or not result or "test_confusion" not in result:
                self.folds[k].failed.append(number)
                self.folds[k].tuned = False
            return
        k = self.owner.pop(trial_id, None)
        if k is None:  # an untuned training: nothing to learn from it
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
