"""The progress table of evaluations and searches, driven through Tune's callback hooks with a fake clock."""

from __future__ import annotations

import io

from ray.tune.experiment import Trial

from gbvnet.cli.progress import ProgressTable, clock


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make_table(total=4, concurrency=2):
    now, out = Clock(), io.StringIO()
    table = ProgressTable(total=total, max_epochs=8, concurrency=concurrency, kind="fold", title="loso",
                          name=lambda trial: f"subject-{trial.config['fold'] + 1}", interval=30, stream=out, now=now)
    trials = [Trial("__fake", config={"fold": i}, stub=True) for i in range(total)]
    return table, trials, now, out


def test_running_folds_show_epoch_score_elapsed_and_time_left():
    table, trials, now, out = make_table()
    table.setup()
    for t in trials[:2]:
        t.set_status(Trial.RUNNING)
        table.on_trial_start(0, trials, t)
    now.t += 40  # start-up, then one epoch every 10 s
    table.on_trial_result(1, trials, trials[0], {"epoch": 1, "val_macro_f1": 0.5})
    now.t += 10
    table.on_trial_result(2, trials, trials[0], {"epoch": 2, "val_macro_f1": 0.7})
    table.on_trial_result(2, trials, trials[1], {"epoch": 1, "val_macro_f1": 0.6})
    text = table.table()
    assert text.splitlines()[0] == "[loso 0:00:50] folds: 0 done, 2 running, 2 waiting; about ? left"
    row = next(line for line in text.splitlines() if "subject-1" in line).split()
    assert row == ["subject-1", "running", "2/8", "0.700", "0.700", "0:00:50", "0:01:00"]  # 6 epochs x 10 s
    assert next(line for line in text.splitlines() if "subject-2" in line).split()[-1] == "?"  # one epoch only

    now.t += 10
    table.on_trial_result(3, trials, trials[1], {"epoch": 2, "val_macro_f1": 0.4})
    trials[0].set_status(Trial.TERMINATED)
    table.on_trial_complete(3, trials, trials[0])
    assert out.getvalue().splitlines()[-1] == "fold subject-1 done after epoch 2/8: best val_macro_f1 0.700, 0:01:00"
    # subject-2: 6 epochs x 10 s left; 2 folds waiting, each as long as subject-1 took (60 s); 2 at a time
    assert table.time_left() == (6 * 10 + 2 * 60) / 2
    row = next(line for line in table.table().splitlines() if "subject-2" in line).split()
    assert row[2:5] == ["2/8", "0.400", "0.600"]  # last and best
    trials[2].set_status(Trial.RUNNING)
    table.on_trial_start(3, trials, trials[2])
    now.t += 15  # no epoch yet: expected to take as long as subject-1 did (60 s), 15 s of it gone
    assert table.table().splitlines()[-1].split()[-1] == "0:00:45"
    table.total = 3  # nothing waiting: the run lasts as long as its slowest fold (subject-2: 6 epochs x 10 s)
    assert table.time_left() == 60


def test_table_is_printed_every_interval_while_folds_run():
    table, trials, now, out = make_table()
    table.setup()
    table.on_step_end(0, trials)
    assert out.getvalue() == ""  # nothing running yet
    table.on_trial_start(0, trials, trials[0])
    now.t += 29
    table.on_step_end(1, trials)
    assert out.getvalue() == "fold subject-1 started\n"
    now.t += 1
    table.on_step_end(2, trials)
    assert out.getvalue().count("[loso 0:00:30]") == 1
    table.on_step_end(3, trials)
    assert out.getvalue().count("[loso") == 1  # not again before another interval


def test_resumed_run_counts_folds_finished_before():
    table, trials, now, out = make_table(total=3)
    table.setup()
    trials[0].set_status(Trial.TERMINATED)  # finished before the interruption: never started in this run
    table.on_trial_start(0, trials, trials[1])
    assert "1 done, 1 running, 1 waiting" in table.table().splitlines()[0]


def test_each_trial_shows_its_own_epoch_budget():
    """A nested run's search trials train fewer epochs than its outer folds: each row and done line says its own."""
    now, out = Clock(), io.StringIO()
    table = ProgressTable(total=2, concurrency=2, title="nested loso", stream=out, now=now,
                          max_epochs=lambda trial: 2 if trial.config["job"] == "inner" else 8,
                          name=lambda trial: trial.config["job"])
    trials = [Trial("__fake", config={"job": job}, stub=True) for job in ("inner", "tuned")]
    table.setup()
    for t in trials:
        table.on_trial_start(0, trials, t)
    now.t += 10
    for t in trials:
        table.on_trial_result(1, trials, t, {"epoch": 1, "val_macro_f1": 0.5})
    now.t += 10
    for t in trials:
        table.on_trial_result(2, trials, t, {"epoch": 2, "val_macro_f1": 0.6})
    rows = {line.split()[0]: line.split() for line in table.table().splitlines()[2:]}
    assert rows["inner"][2] == "2/2" and rows["tuned"][2] == "2/8"
    assert rows["tuned"][-1] == "0:01:00"  # 6 epochs left at 10 s each
    table.on_trial_complete(2, trials, trials[0])
    assert out.getvalue().splitlines()[-1].startswith("trial inner done after epoch 2/2:")


def test_clock():
    assert clock(3725.4) == "1:02:05" and clock(None) == "?"
