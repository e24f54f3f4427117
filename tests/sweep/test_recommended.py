"""One recommended point everywhere, one rule for a trial's status, and the live console."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import epoch, front_point
from hiertune.sweep.front import Pick, compute_front, recommended, render, write_front
from hiertune.sweep.records import SweepPoints
from hiertune.sweep.reporter import ConsoleReporter
from hiertune.sweep.state import trial_status
from hiertune.training.faults import FAILURE_KEY


def point(trial: int, seen: float, unseen: float, score: str = "msp"):
    return front_point(f"trial_{trial}", seen, unseen, score, params={"lr": 0.01 * (trial + 1)})


# A front with a clear knee at (0.7, 0.7): the corners (0.95, 0.1) and (0.05, 1.0) are extremes.
FRONT = [point(0, 0.95, 0.10), point(1, 0.80, 0.55), point(2, 0.70, 0.70), point(3, 0.40, 0.85),
         point(4, 0.05, 1.00, "energy")]


@pytest.mark.parametrize(("iterations", "epochs", "max_t", "status"), [
    (1, 1, 4, "completed"),  # the bug: epochs < max_t, all epochs run, was recorded "stopped"
    (4, 4, 4, "completed"),
    (2, 4, 4, "stopped"),
    (4, 8, 4, "completed"),  # ASHA's last rung ends a trial that asked for more
    (2, 3, 5, "stopped"),
])
def test_a_trial_is_stopped_only_before_its_own_last_epoch(iterations, epochs, max_t, status):
    assert trial_status(iterations, epochs, max_t) == status
    assert trial_status(iterations, epochs, max_t, finished=False) == "interrupted"
    assert trial_status(iterations, epochs, max_t, failed=True) == "failed"


def test_the_recommended_point_is_the_knee_unless_the_space_picks_another():
    assert recommended(FRONT, Pick.parse("knee")).trial == "trial_2"
    assert recommended(FRONT, Pick.parse("max-unseen")).trial == "trial_4"
    assert recommended([], Pick.parse("knee")) is None
    table = render(FRONT, recommended(FRONT, Pick.parse("knee"))).splitlines()
    marked = [line for line in table[1:] if line.startswith("*")]
    assert len(marked) == 1 and "trial_2" in marked[0]


def test_the_front_plots_mark_the_recommended_point(tmp_path):
    cloud = [point(k % 5, s, u, ("msp", "energy")[k % 2]) for k, (s, u) in
             enumerate(np.random.default_rng(0).uniform(0.0, 0.6, (300, 2)))]
    best = recommended(FRONT, Pick.parse("knee"))
    csv_path, png_path, html_path = write_front(tmp_path, "s", SweepPoints.of(cloud + FRONT), FRONT, best)
    assert png_path.stat().st_size > 10_000
    rows = csv_path.read_text().splitlines()
    assert rows[0].endswith(",recommended") and [r.endswith(",1") for r in rows[1:]].count(True) == 1
    html = html_path.read_text()
    # Hover text (JSON-escaped in the page): trial, status, score, thresholds, accuracies, params.
    assert r"\u003cb\u003etrial_2\u003c\u002fb\u003e (completed, 3 epochs)" in html
    assert r"score msp, \u03c4_super 0.900, \u03c4_sub 0.800" in html and "lr: 0.03" in html
    assert '"name":"recommended"' in html
    assert '<script src="https://cdn.plot.ly' not in html and len(html) > 1_000_000  # plotly.js inline: offline


class Log(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def trial(number: int, epochs: int = 4, **last) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t{number}", config={"trial_number": number, "epochs": epochs, "lr": 0.0123},
                           last_result=last)


def test_the_console_reports_each_trial_event_and_where_the_sweep_stands():
    handler = Log()
    logging.getLogger("hiertune").addHandler(handler)
    logging.getLogger("hiertune").setLevel(logging.INFO)
    try:
        reporter = ConsoleReporter(total=3, max_t=4, pick=Pick.parse("knee"), sampled=["lr"], stopped_by="MO-ASHA")
        a, b, c = trial(0), trial(1, epochs=1), trial(2)
        for t in (a, b, c):
            reporter.on_trial_start(0, [], t)
        result = {**epoch(1, 0.61, 0.72, 0.44, "energy").flat(), "training_iteration": 1}
        reporter.on_trial_result(0, [], a, result)
        a.last_result = result
        reporter.on_trial_complete(0, [], a)  # after 1 of 4 epochs: the scheduler stopped it
        reporter.on_trial_result(0, [], b, {**result, "seen": 0.5})
        b.last_result = {**result, "seen": 0.5}
        reporter.on_trial_complete(0, [], b)  # its own 1 epoch: finished, not stopped
        c.last_result = {FAILURE_KEY: "diverged", "training_iteration": 1}
        reporter.on_trial_error(0, [], c)
        # A resumed sweep's reporter, pickled when the sweep began, sees earlier trials in Tune's list.
        resumed = ConsoleReporter(total=3, max_t=4, pick=Pick.parse("knee"), sampled=["lr"], stopped_by="ASHA")
        earlier = [SimpleNamespace(trial_id=f"e{i}", status="TERMINATED", TERMINATED="TERMINATED", ERROR="ERROR")
                   for i in range(2)]
        d = trial(3)
        d.status, d.TERMINATED, d.ERROR = "RUNNING", "TERMINATED", "ERROR"
        resumed.on_trial_start(0, [*earlier, d], d)
        d.last_result = result
        resumed.on_trial_complete(0, [*earlier, d], d)
    finally:
        logging.getLogger("hiertune").removeHandler(handler)
    text = "\n".join(handler.lines)
    assert "trial-00 started  lr=0.0123" in text
    assert "trial-00 epoch 1/4   seen 0.610  unseen 0.720  hv 0.440" in text
    assert "trial-00 stopped by MO-ASHA after 1 of 4 epochs" in text  # the space's scheduler, named
    assert "trial-01 finished 1 epochs" in text
    status = [line for line in handler.lines if "done," in line]
    assert "1/3 done, 2 running" in status[0] and "2/3 done, 1 running" in status[1]
    assert "best so far trial-00: seen 0.610, unseen 0.720" in status[1] and "ETA ~" in status[1]
    assert "trial-02 failed: diverged" in text
    # The last line leaves the best to the recommended point printed after it (picked from every epoch).
    assert "3/3 done, 0 running" in status[2] and "best so far" not in status[2]
    assert "3/3 done" in status[3]  # 2 trials before the resume, and this one


def test_the_console_table_spreads_its_rows_along_the_front_and_keeps_the_recommended_one():
    front = [point(k, 1 - k / 40, k / 40) for k in range(40)]
    best = front[17]
    lines = render(front, best, rows=5).splitlines()
    assert len(lines) == 1 + 6 + 1 and lines[-1] == "(34 more front points in pareto.csv)"
    shown = [line.split()[0] for line in lines[1:-1]]
    assert shown[:2] == ["trial_0", "trial_10"] and "*" in [line[0] for line in lines[1:-1]]
    assert any("trial_17" in line and line.startswith("*") for line in lines)
    assert "0.0180" not in lines[2] and "0.11" in lines[2]  # lr of trial_10 in 3 significant digits


def test_best_so_far_names_the_point_the_sweeps_end_would_recommend():
    """Ranking each trial's own knee would name trial-00 here; the sweep's end takes the knee of
    the front over every trial's points, trial-01's (0.61, 0.92), and the console says the same."""
    fronts = {0: ((0.96, 0.72), (0.16, 0.97)), 1: ((0.62, 0.78), (0.61, 0.92))}
    reporter = ConsoleReporter(total=3, max_t=4, pick=Pick.parse("knee"), sampled=[], stopped_by="ASHA")
    for number, front in fronts.items():
        own_knee = Pick.parse("knee").rank([front_point("x", s, u) for s, u in front])[0]
        reporter.on_trial_result(0, [], trial(number), epoch(1, own_knee.seen, own_knee.unseen, front=front).flat())
    final = recommended(compute_front([front_point(f"trial-{n:02d}", s, u) for n, f in fronts.items() for s, u in f]),
                        Pick.parse("knee"))
    assert final.trial == "trial-01" and (final.seen, final.unseen) == (0.61, 0.92)
    assert "best so far trial-01: seen 0.610, unseen 0.920" in reporter.status()
    # With sampled thresholds each trial's one point is what the front holds.
    sampled = ConsoleReporter(total=3, max_t=4, pick=Pick.parse("knee"), sampled=[], stopped_by="ASHA",
                              sampled_thresholds=True)
    sampled.on_trial_result(0, [], trial(0), epoch(1, 0.5, 0.5, front=((0.99, 0.99),)).flat())
    assert "best so far trial-00: seen 0.500, unseen 0.500" in sampled.status()
