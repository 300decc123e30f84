"""Console progress of evaluations and searches: a compact table of their folds / trials while they run.

:class:`ProgressTable` is a Ray Tune callback (``tune.RunConfig(callbacks=[...])``) in the style of Tune's own
heartbeat reporter: one line when a fold or trial starts, ends or fails, and every ``interval`` seconds a table::

    [loso 0:03:00] folds: 2 done, 2 running, 2 waiting; about 0:03:26 left
      fold       status      epoch val macro-F1   best  elapsed     left
      subject-1  done        10/10        0.862  0.862  0:02:26        -
      subject-2  done         7/10        0.810  0.899  0:01:26        -
      subject-3  running      3/10        0.697  0.697  0:01:13  0:01:25
      subject-4  starting     0/10            -      -  0:00:21  0:01:35

per fold/trial: its state, epoch of epochs, validation macro-F1 of the last epoch and the best so far, time since
it started and the time it still needs. Estimates: a running trial needs ``max_epochs - epoch`` more epochs at its
mean time per epoch so far (an upper bound: early stopping or ASHA may end it sooner), or, before its second
epoch, the mean duration of the finished ones less its elapsed time; a waiting one needs the mean duration of the
finished ones (else the projected duration of the running ones); ``concurrency`` run at a time, and the run
lasts at least as long as its slowest running trial. ``?`` means not known yet (nothing has finished and no trial
has reported two epochs).

Why not Tune's reporters: with Ray 2.60's default output engine a ``progress_reporter`` (``CLIReporter``) given to
``RunConfig`` is ignored, and the engine's own table lists every config value and Tune's ``training_iteration``,
not epochs or time left; the Ray Train V2 trainer inside each trial takes no Tune callbacks and its workers' output
does not reach the driver. Each epoch reaches this callback as a Tune result, through ``TuneReportCallback``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from ray import tune
from ray.tune.experiment import Trial

from gbvnet.train.metrics import SELECTION_METRIC


def clock(seconds: float | None) -> str:
    """``h:mm:ss``, or ``?`` for an unknown duration."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@dataclass
class _Row:
    name: str
    started: float
    max_epochs: int  # the epochs this trial may train
    status: str = "starting"  # starting (no epoch yet), running, done, failed
    ended: float | None = None
    epoch: int = 0
    score: float | None = None
    best: float | None = None
    first_epoch: int | None = None  # the first epoch this run reported (> 1 after a resume) and when
    first_time: float = 0.0
    last_time: float = 0.0

    def epoch_seconds(self) -> float | None:
        if self.first_epoch is None or self.epoch <= self.first_epoch:
            return None
        return (self.last_time - self.first_time) / (self.epoch - self.first_epoch)


class ProgressTable(tune.Callback):
    """Print the progress of a Tune run's folds / trials (see the module docstring).

    ``total``: folds or trials the run will have; ``max_epochs``: epochs each may train (or, per trial, a function
    of it: a nested run's search trials train fewer than its outer folds); ``concurrency``: how many
    run at a time; ``kind``: what a trial is called (``fold``, ``trial``); ``name``: a trial's display name
    (default: its Tune id); ``title``: the run's label in the header; ``metric``: the per-epoch score shown.
    """

    def __init__(self, *, total: int, max_epochs: int | Callable[[Trial], int], concurrency: int,
                 kind: str = "trial", title: str = "tune",
                 name: Callable[[Trial], str] | None = None, metric: str = SELECTION_METRIC, interval: float = 30.0,
                 stream: TextIO | None = None, now: Callable[[], float] = time.monotonic):
        self.total, self.concurrency = total, max(1, concurrency)
        self.kind, self.title, self.metric, self.interval = kind, title, metric, interval
        self.name = name or (lambda trial: trial.trial_id)
        self.epochs_of = max_epochs if callable(max_epochs) else (lambda trial: max_epochs)
        self.stream, self.now = stream, now
        self.setup()

    # ------------------------------------------------------------------------------------------ Tune hooks
    def setup(self, **info) -> None:
        """Start afresh (Tune calls this when the run starts; a restored Tuner brings back a pickled copy)."""
        self.rows: dict[str, _Row] = {}  # by trial id, in start order
        self.done_before = 0  # trials finished in an earlier, interrupted run (--resume)
        self.start = self.now()
        self.last_table = self.start

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self.done_before = sum(t.status == Trial.TERMINATED and t.trial_id not in self.rows for t in trials)
        row = self.rows.get(trial.trial_id)
        if row is None or row.status in ("done", "failed"):
            self.rows[trial.trial_id] = self._new_row(trial)
        self._print(f"{self.kind} {self.rows[trial.trial_id].name} started")

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        row = self.rows.setdefault(trial.trial_id, self._new_row(trial))
        if "epoch" not in result:
            return
        t = self.now()
        row.status, row.epoch, row.last_time = "running", int(result["epoch"]), t
        if row.first_epoch is None:
            row.first_epoch, row.first_time = row.epoch, t
        if self.metric in result:
            row.score = float(result[self.metric])
            row.best = row.score if row.best is None else max(row.best, row.score)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        row = self._end(trial, "done")
        best = "-" if row.best is None else f"{row.best:.3f}"
        self._print(f"{self.kind} {row.name} done after epoch {row.epoch}/{row.max_epochs}: best {self.metric} "
                    f"{best}, {clock(row.ended - row.started)}")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._print(f"{self.kind} {self._end(trial, 'failed').name} failed")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._print(f"{self.kind} {self._end(trial, 'failed').name} failed; Tune retries it")

    def on_step_end(self, iteration: int, trials: list[Trial], **info) -> None:
        running = any(row.status in ("starting", "running") for row in self.rows.values())
        if running and self.now() - self.last_table >= self.interval:
            self._print(self.table())

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        if self.rows:
            self._print(self.table())

    # ------------------------------------------------------------------------------------------ the table
    def _new_row(self, trial: Trial) -> _Row:
        return _Row(self.name(trial), self.now(), self.epochs_of(trial))

    def _end(self, trial: Trial, status: str) -> _Row:
        row = self.rows.setdefault(trial.trial_id, self._new_row(trial))
        row.status, row.ended = status, self.now()
        return row

    def _finished_mean(self) -> float | None:
        durations = [r.ended - r.started for r in self.rows.values() if r.status == "done"]
        return sum(durations) / len(durations) if durations else None

    def _left(self, row: _Row) -> float | None:
        """Time ``row`` still needs: its remaining epochs at its pace so far, else (before its second epoch) the
        mean duration of the finished ones less its elapsed time; ``None`` when neither is known."""
        if row.status in ("done", "failed"):
            return 0.0
        per_epoch, mean = row.epoch_seconds(), self._finished_mean()
        if per_epoch is not None:
            return (row.max_epochs - row.epoch) * per_epoch
        return None if mean is None else max(0.0, mean - (self.now() - row.started))

    def time_left(self) -> float | None:
        """Estimated time until every fold/trial has finished (``None``: not known yet)."""
        now = self.now()
        rows = list(self.rows.values())
        active = [r for r in rows if r.status in ("starting", "running")]
        waiting = max(0, self.total - self.done_before - len(rows))
        lefts = [self._left(r) for r in active]
        if None in lefts:
            return None
        duration = self._finished_mean()
        if duration is None and active:
            duration = sum(now - r.started + left for r, left in zip(active, lefts, strict=True)) / len(active)
        if waiting and duration is None:
            return None
        return max([(sum(lefts) + waiting * (duration or 0.0)) / self.concurrency, *lefts])  # >= the longest

    def table(self) -> str:
        now = self.now()
        self.last_table = now
        rows = list(self.rows.values())
        counts = {s: sum(r.status == s for r in rows) for s in ("done", "failed")}
        counts["done"] += self.done_before
        running = sum(r.status in ("starting", "running") for r in rows)
        waiting = max(0, self.total - self.done_before - len(rows))
        head = (f"[{self.title} {clock(now - self.start)}] {self.kind}s: {counts['done']} done, {running} running, "
                f"{waiting} waiting" + (f", {counts['failed']} failed" if counts["failed"] else "")
                + f"; about {clock(self.time_left())} left")
        width = max([len(self.kind)] + [len(r.name) for r in rows])
        lines = [head, f"  {self.kind:<{width}}  {'status':<9} {'epoch':>7} {'val macro-F1':>12} {'best':>6} "
                       f"{'elapsed':>8} {'left':>8}"]
        for r in rows:
            left = self._left(r)
            lines.append(f"  {r.name:<{width}}  {r.status:<9} {f'{r.epoch}/{r.max_epochs}':>7} "
                         f"{'-' if r.score is None else f'{r.score:.3f}':>12} "
                         f"{'-' if r.best is None else f'{r.best:.3f}':>6} "
                         f"{clock((r.ended or now) - r.started):>8} {'-' if left == 0 else clock(left):>8}")
        return "\n".join(lines)

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)
