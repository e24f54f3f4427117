"""MO-ASHA: hand-made rungs with known fronts and known promotions, its state across a restore,
its selection in the space, and a real sweep it stops trials in."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import last_json, space_file
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from hiertune.errors import UserError
from hiertune.novelty.metrics import hypervolume_2d
from hiertune.sweep.space import load_space
from hiertune.sweep.moasha import (
    MOASHAScheduler,
    SchedulerState,
    nondominated_levels,
    rank_trials,
)
from hiertune.sweep.run import make_scheduler
from hiertune.sweep.search import FidelityAwareOptunaSearch
from hiertune.sweep.state import load_trials

GO, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def trials(n: int) -> list[Trial]:
    return [Trial("__fake", stub=True) for _ in range(n)]


def front_result(t: int, points) -> dict:
    return {"training_iteration": t, "front": [list(p) for p in points]}


def moasha(**kw) -> MOASHAScheduler:
    return MOASHAScheduler(("seen", "unseen"), points_key="front", **{"max_t": 4, "grace_period": 1,
                                                                       "reduction_factor": 2, **kw})


def test_levels_of_a_known_point_set():
    points = np.array([[1, 1], [1, 1], [0.5, 0.5], [np.nan, 1], [2, 0], [0.4, 0.6], [0.3, 0.3]])
    # Equal points share a level; a NaN row has none.
    assert nondominated_levels(points).tolist() == [0, 0, 1, -1, 0, 1, 2]


def test_a_trial_ranks_by_its_best_point_then_by_how_far_it_reaches():
    sets = {"a": [[0.6, 0.6], [0.7, 0.5]], "b": [[0.65, 0.55]], "corner": [[0.99, 0.05]],
            "dominated": [[0.1, 0.1]], "empty": np.empty((0, 2)), "far": [[0.05, 0.99]]}
    # Level 0: a, b, corner, far. The ε-net starts at the highest seen (corner), then takes
    # the farthest reach (far), then a (whose (0.6, 0.6) is farther from both than b's point).
    assert rank_trials(sets) == ["corner", "far", "a", "b", "dominated", "empty"]


def test_levels_are_by_trial_once_a_level_is_removed():
    # b's point is dominated only by a's second point, which is itself dominated: a per-point
    # sort puts b two fronts down, below c. By trial, once a is gone b and c share level 1,
    # and the ε-net starts there with the higher seen, b's.
    sets = {"c": [[0.3, 0.55]], "b": [[0.45, 0.45]], "a": [[0.6, 0.6], [0.5, 0.5]]}
    assert nondominated_levels(np.concatenate([np.asarray(v) for v in sets.values()])).tolist() == [1, 2, 0, 1]
    assert rank_trials(sets) == ["a", "b", "c"]


# A saturated corner, as on the real data: every trial reaches unseen 1.0 once τ_sub → 1, at a
# seen accuracy that differs by a few images. "strong" leads the whole middle; "weak" is worse
# everywhere except that corner, which it wins by 0.004.
SATURATED = {"strong": [(0.381, 1.0), (0.80, 0.85), (0.90, 0.60)],
             "weak": [(0.385, 1.0), (0.60, 0.70), (0.70, 0.50)],
             "middling": [(0.370, 1.0), (0.78, 0.80), (0.86, 0.55)]}


def test_epsilon_dominance_takes_a_sliver_at_a_saturated_corner_away_from_a_weak_trial():
    assert rank_trials(SATURATED)[:2] == ["strong", "weak"]  # exact: weak is on level 0 by the sliver
    # ε = 0.01: strong's corner is within ε of weak's, and weak's within ε of strong's, so the
    # corner puts nobody on level 0; strong is there for its middle, and weak falls below middling.
    assert rank_trials(SATURATED, epsilon=0.01) == ["strong", "middling", "weak"]


def test_epsilon_keeps_a_corner_won_by_more_than_epsilon_and_the_exact_winner_of_a_near_tie():
    corner = {**SATURATED, "weak": [(0.45, 1.0), (0.60, 0.70)]}  # now ahead at the corner by 0.069
    assert rank_trials(corner, epsilon=0.01)[:2] == ["strong", "weak"]
    # a and b tie within ε at the high-seen corner that the distinct trial m does not reach:
    # a, the exact winner there, shares m's level; b, its near copy, does not.
    near = {"m": [(0.5, 0.9), (0.7, 0.7)], "b": [(0.945, 0.3)], "a": [(0.95, 0.3)]}
    assert rank_trials(near, epsilon=0.01) == ["a", "m", "b"]


def test_trials_all_within_epsilon_of_each_other_keep_the_exact_order():
    close = {"a": [(0.80, 0.60)], "b": [(0.803, 0.598)], "c": [(0.79, 0.59)]}
    assert rank_trials(close, epsilon=0.01) == rank_trials(close) == ["b", "a", "c"]


# Five trials reach rung 1 in this order, each with its own front. A and B crowd the middle;
# C alone reaches the high-seen corner, D alone the high-unseen one; E is dominated.
RUNG = {"A": [(0.80, 0.60), (0.70, 0.70), (0.60, 0.80)], "B": [(0.78, 0.62), (0.68, 0.72)],
        "C": [(0.95, 0.20)], "D": [(0.15, 0.95)], "E": [(0.50, 0.50)]}


def test_moasha_keeps_the_corner_trials_that_asha_on_hypervolume_stops():
    asha = ASHAScheduler(metric="hypervolume", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    mo = moasha()
    asha_says, mo_says = [], []
    for trial, points in zip(trials(len(RUNG)), RUNG.values()):
        asha.on_trial_add(None, trial)
        mo.on_trial_add(None, trial)
        asha_says.append(asha.on_trial_result(None, trial, {"training_iteration": 1,
                                                             "hypervolume": hypervolume_2d(points)}))
        mo_says.append(mo.on_trial_result(None, trial, front_result(1, points)))
    assert asha_says == [GO, STOP, STOP, STOP, STOP]  # C's and D's small areas lose to A's
    # B: beside A, second of two -> stopped. C: on level 0, first in the ε-net of three -> on.
    # D: level 0, farthest from C -> second of four, in the top half. E: level 1, last of five.
    assert mo_says == [GO, STOP, GO, GO, STOP]


def test_promotion_is_asynchronous_with_fewer_than_eta_trials_at_a_rung():
    mo = moasha(max_t=9, grace_period=1, reduction_factor=3)  # rungs at 1 and 3
    first, worse, better = trials(3)
    assert mo.on_trial_result(None, first, front_result(1, [(0.5, 0.5)])) == GO  # alone at its rung
    assert mo.on_trial_result(None, first, front_result(2, [(0.5, 0.5)])) == GO  # between rungs
    assert mo.on_trial_result(None, first, front_result(3, [(0.6, 0.6)])) == GO  # alone at rung 3
    assert mo.on_trial_result(None, worse, front_result(1, [(0.4, 0.4)])) == STOP  # second of 2, η = 3
    assert mo.on_trial_result(None, better, front_result(1, [(0.7, 0.7)])) == GO  # first of 3
    assert mo.on_trial_result(None, first, front_result(9, [(0.8, 0.8)])) == STOP  # max_t reached
    assert "num_stopped=2" in mo.debug_string()


def test_single_point_trials_from_objective_keys_with_a_minimised_objective():
    mo = MOASHAScheduler(("acc", "loss"), mode=("max", "min"), max_t=4, grace_period=1, reduction_factor=2)
    a, b, c = trials(3)
    assert mo.on_trial_result(None, a, {"training_iteration": 1, "acc": 0.8, "loss": 0.5}) == GO
    # b has less accuracy and more loss: dominated (were loss maximised, it would not be).
    assert mo.on_trial_result(None, b, {"training_iteration": 1, "acc": 0.7, "loss": 0.6}) == STOP
    # c trades loss for accuracy: level 0 with a, and first of the ε-net (highest accuracy).
    assert mo.on_trial_result(None, c, {"training_iteration": 1, "acc": 0.9, "loss": 0.9}) == GO


def test_results_without_points_change_nothing_and_a_trial_with_no_finite_point_ranks_last():
    mo = moasha()
    a, b, c = trials(3)
    assert mo.on_trial_result(None, a, {"training_iteration": 1, "failure": "diverged"}) == GO
    assert mo.on_trial_result(None, b, front_result(1, [(0.1, 0.1)])) == GO  # first recorded: a left no trace
    assert mo.on_trial_result(None, c, front_result(1, [(np.nan, 0.9)])) == STOP


def test_a_trial_stopped_between_rungs_is_recorded_where_it_got_to():
    mo = moasha(max_t=8)  # rungs 1, 2, 4
    a, b = trials(2)
    mo.on_trial_result(None, a, front_result(1, [(0.5, 0.5)]))
    mo.on_trial_complete(None, a, front_result(3, [(0.9, 0.9)]))  # ended after epoch 3: rung 2
    assert mo.on_trial_result(None, b, front_result(2, [(0.6, 0.6)])) == STOP  # ranked below a there


def feed(scheduler: MOASHAScheduler, plan: list) -> list[str]:
    return [scheduler.on_trial_result(None, trial, front_result(t, points)) for trial, t, points in plan]


def test_saved_and_restored_state_gives_identical_decisions(tmp_path: Path):
    rng = np.random.default_rng(0)
    ts = trials(12)
    plan = [(trial, t, rng.uniform(0, 1, (int(rng.integers(1, 5)), 2))) for t in (1, 2) for trial in ts]
    first, second = plan[:14], plan[14:]
    original = moasha()
    feed(original, first)
    original.save(str(tmp_path / "moasha.json"))
    restored = moasha()
    restored.restore(str(tmp_path / "moasha.json"))
    # Through Ray's experiment checkpoint: the callback and the scheduler pickle as one graph
    # (tuner.pkl), and the callback's state sets the scheduler's.
    fresh = moasha()
    scheduler, callback = pickle.loads(pickle.dumps((fresh, SchedulerState(fresh))))
    assert callback.scheduler is scheduler
    callback.set_state(pickle.loads(pickle.dumps(SchedulerState(original).get_state())))

    expected = feed(original, second)
    assert feed(restored, second) == expected
    assert feed(scheduler, second) == expected
    assert feed(moasha(), second) != expected  # the restored rungs are what made these decisions
    assert STOP in expected and GO in expected


def test_state_from_a_scheduler_with_other_rungs_is_refused():
    with pytest.raises(ValueError, match="rungs"):
        moasha(max_t=8).set_state(moasha(max_t=4).get_state())


# ---- selection in the search space -------------------------------------------------------

SPACE = """
family: cnn
fixed: {{epochs: 4}}
search:
  lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
  {extra}
scheduler: {scheduler}
"""


def space_with(tmp_path: Path, scheduler: str, extra: str = ""):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(scheduler=scheduler, extra=extra))
    return load_space(path)


def test_space_selects_the_scheduler_and_asha_stays_the_default(tmp_path: Path):

    default = space_with(tmp_path, "{max_t: 4}")
    assert default.scheduler.type == "asha"
    scheduler, callbacks = make_scheduler(default)
    assert isinstance(scheduler, ASHAScheduler) and callbacks == []

    mo, callbacks = make_scheduler(default.with_overrides({"scheduler.type": "moasha"}))  # what --set does
    assert isinstance(mo, MOASHAScheduler) and [c.scheduler for c in callbacks] == [mo]
    # Post-hoc thresholds: ranked by the trial's front; the reported front rides under "front".
    assert mo.on_trial_result(None, trials(1)[0], front_result(1, [(0.5, 0.5)])) == GO
    assert sorted(mo._rungs) == [1, 3]

    fifo, callbacks = make_scheduler(space_with(tmp_path, "{type: fifo, max_t: 4}"))
    assert type(fifo) is FIFOScheduler and callbacks == []


def test_the_space_sets_moashas_epsilon_and_refuses_it_for_another_scheduler(tmp_path: Path):
    mo, _ = make_scheduler(space_with(tmp_path, "{type: moasha, max_t: 4}"))
    assert mo._epsilon == 0.01  # the space's default
    mo, _ = make_scheduler(space_with(tmp_path, "{type: moasha, max_t: 4, epsilon: 0}"))
    assert mo._epsilon == 0
    with pytest.raises(UserError, match="scheduler.epsilon is MO-ASHA's"):
        space_with(tmp_path, "{type: asha, max_t: 4, epsilon: 0.02}")
    with pytest.raises(UserError, match=r"epsilon must be in \[0, 1\)"):
        space_with(tmp_path, "{type: moasha, max_t: 4, epsilon: -0.1}")


def test_sampled_thresholds_rank_each_trial_by_its_one_point(tmp_path: Path):

    space = space_with(tmp_path, "{type: moasha, max_t: 4, reduction_factor: 2}",
                       extra="tau_super: {type: float, low: 0.5, high: 1.0, posthoc: false}")
    assert space.samples_thresholds
    mo, _ = make_scheduler(space)
    a, b = trials(2)
    assert mo.on_trial_result(None, a, {"training_iteration": 1, "point_seen": 0.6, "point_unseen": 0.6,
                                        "front": [[0.9, 0.9]]}) == GO
    # Judged at its point (dominated by a's), not at its front (which would dominate a's).
    assert mo.on_trial_result(None, b, {"training_iteration": 1, "point_seen": 0.5, "point_unseen": 0.5,
                                        "front": [[0.95, 0.95]]}) == STOP


def test_nsga2_learns_moasha_stopped_trials_as_pruned(tmp_path: Path):
    from optuna.trial import TrialState


    space = space_with(tmp_path, "{type: moasha, max_t: 4, reduction_factor: 2}").with_overrides(
        {"tune.sampler": "nsga2"})
    searcher, (scheduler, _) = FidelityAwareOptunaSearch(space), make_scheduler(space)
    configs = [searcher.suggest(f"t{i}") for i in range(2)]
    assert all(1e-4 <= c["lr"] <= 1e-2 for c in configs)
    a, b = trials(2)
    best = {"training_iteration": 1, "seen": 0.8, "unseen": 0.7, "front": [[0.8, 0.7]]}
    worse = {"training_iteration": 1, "seen": 0.5, "unseen": 0.4, "front": [[0.5, 0.4]]}
    assert scheduler.on_trial_result(None, a, best) == GO
    assert scheduler.on_trial_result(None, b, worse) == STOP
    searcher.on_trial_complete("t0", {**best, "training_iteration": 4})
    searcher.on_trial_complete("t1", worse)  # what Tune tells the searcher after the STOP
    study = searcher._ot_study
    assert len(study.directions) == 2
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[0].values == [0.8, 0.7]


@pytest.mark.parametrize("scheduler, message", [
    ("{type: mosha}", "scheduler.type: unknown scheduler 'mosha' (did you mean 'moasha'?)"),
    ("{type: hyperband}", "scheduler.type: unknown scheduler 'hyperband' (known: asha, fifo, moasha)"),
    ("{type: moasha, eta: 3}", "scheduler: unknown key 'eta'"),
])
def test_unknown_scheduler_type_or_field_is_one_line(tmp_path: Path, scheduler: str, message: str):
    with pytest.raises(UserError) as info:
        space_with(tmp_path, scheduler)
    assert message in str(info.value) and "\n" not in str(info.value)


# ---- a real sweep ------------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_with_moasha_stops_trials_and_optuna_learns_them_as_pruned(cli, small_data, tmp_path, one_ray):
    from optuna.trial import TrialState

    path = space_file(tmp_path, small_data, samples=6, max_t=3)
    result = cli("sweep", str(path), "--set", "scheduler.type=moasha", "--name", "mo",
                 "--storage", str(tmp_path / "sweeps"), "--json")
    assert result.code == 0, result.err[-3000:]
    assert sum(last_json(result.out)["trials"].values()) == 6
    status = {t.trial_id: t.status for t in load_trials(tmp_path / "sweeps" / "mo")}
    stopped = {k for k, v in status.items() if v == "stopped"}
    assert stopped and "failed" not in status.values()

    tune_dir = str(tmp_path / "sweeps" / "mo" / "tune")
    searcher = FidelityAwareOptunaSearch(load_space(path))
    searcher.restore_from_dir(tune_dir)
    states = {k: searcher._ot_trials[k].number for k in status}
    by_number = {t.number: t.state for t in searcher._ot_study.trials}
    assert {k for k in status if by_number[states[k]] == TrialState.PRUNED} == stopped
    assert all(by_number[states[k]] == TrialState.COMPLETE for k in status if k not in stopped)

    # The scheduler's rungs go into Ray's experiment checkpoint and come back on --resume: the
    # resumed run (nothing left to train) saves them again, from the scheduler it restored.
    first = saved_rungs(tune_dir)
    assert set(first[1]) == set(status) and all(len(points) >= 1 for points in first[1].values())
    resumed = cli("sweep", str(path), "--name", "mo", "--storage", str(tmp_path / "sweeps"), "--resume", "--json")
    assert resumed.code == 0, resumed.err[-3000:]
    assert len(list(Path(tune_dir).glob("callback-states-*.pkl"))) == 2
    assert saved_rungs(tune_dir) == first


def saved_rungs(tune_dir: str) -> dict:
    """The rungs in the newest of Ray's callback-state files (written by the test's own sweep)."""
    saved = max(Path(tune_dir).glob("callback-states-*.pkl"), key=lambda p: p.stat().st_mtime_ns)
    [state] = [s for s in pickle.loads(saved.read_bytes()).values() if s and "moasha" in s]
    scheduler = MOASHAScheduler(("seen", "unseen"), points_key="front", max_t=3, grace_period=1,
                                reduction_factor=2)
    SchedulerState(scheduler).set_state(state)
    return scheduler._rungs
