"""The scheduler table: a contract over every entry (what it builds with Ray's scheduler API, the
rungs it reads, its own settings), and what a space may say about it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from hiertune.errors import UserError
from hiertune.sweep.run import make_scheduler
from hiertune.sweep.schedulers import SCHEDULERS, Objectives, SchedulerSettings
from hiertune.sweep.space import parse_space

RANKED = Objectives("hypervolume", ("seen", "unseen"), "front")


def space(scheduler: dict, search: dict | None = None):
    raw = {"family": "cnn", "fixed": {"epochs": 9}, "search": search or {}, "scheduler": scheduler}
    return parse_space(yaml.safe_load(yaml.safe_dump(raw)), Path("space.yaml"))


@pytest.mark.parametrize("name", SCHEDULERS)
class TestEveryScheduler:
    def test_builds_a_ray_scheduler_and_its_callbacks(self, name):
        scheduler, callbacks = SCHEDULERS[name].build(SchedulerSettings(type=name, max_t=9, grace_period=1), RANKED)
        assert isinstance(scheduler, TrialScheduler) and isinstance(callbacks, list)
        assert (type(scheduler) is FIFOScheduler) != SCHEDULERS[name].early_stopping  # Ray: ASHA subclasses FIFO

    def test_reads_the_rungs_it_stops_at(self, name):
        settings = SchedulerSettings(type=name, max_t=9, grace_period=1, reduction_factor=3)
        assert settings.rungs == ((1, 3, 9) if SCHEDULERS[name].early_stopping else ())
        assert settings.label == SCHEDULERS[name].label

    def test_a_space_names_it_and_the_sweep_builds_it(self, name):
        s = space({"type": name, "max_t": 9, "grace_period": 1})
        scheduler, _ = make_scheduler(s)
        assert type(scheduler) is type(SCHEDULERS[name].build(s.scheduler, RANKED)[0])

    def test_another_schedulers_own_setting_is_refused(self, name):
        for other, spec in SCHEDULERS.items():
            for setting in set(spec.own_settings) - set(SCHEDULERS[name].own_settings):
                with pytest.raises(UserError, match=f"scheduler.{setting} is {spec.label}'s; scheduler.type is "
                                                    f"'{name}'"):
                    space({"type": name, setting: 0.05})


def test_moasha_ranks_the_front_with_post_hoc_thresholds_and_the_point_with_sampled_ones():
    post_hoc, _ = make_scheduler(space({"type": "moasha", "max_t": 9}))
    sampled, _ = make_scheduler(space({"type": "moasha", "max_t": 9},
                                      {"tau_super": {"type": "float", "low": 0.0, "high": 0.5, "posthoc": False}}))
    assert post_hoc._points_key == "front" and sampled._points_key is None


def test_an_unknown_scheduler_is_one_line_with_the_closest():
    with pytest.raises(UserError, match=r"scheduler.type: unknown scheduler 'ashaa' \(did you mean 'asha'\?\)"):
        space({"type": "ashaa"})
