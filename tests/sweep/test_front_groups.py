"""The front's per-group table and the detailed report of one point."""

from __future__ import annotations

from conftest import front_point
from hiertune.sweep.front import point_report, render


def _point(trial: str, score: str, seen: float):
    aurocs = {"msp": (0.61, 0.93), "vim": (0.72, 0.88), "knn": (float("nan"), 0.90)}
    return front_point(trial, seen, 1 - seen, score, tau_super=0.1, tau_sub=0.2, seen_acc=0.9, seen_shifted_acc=0.7,
                       novel_sub_acc=0.4, novel_super_acc=0.8, accept_shifted=0.75, accept_shifted_super=0.8,
                       accept_shifted_sub=0.9, accept_super=0.95, accept_sub=0.9, seen_super_acc=0.9,
                       unseen_super_acc=0.5, seen_sub_acc=0.8, unseen_sub_acc=0.4,
                       by_score={s: {"auroc_novel_sub": sub, "auroc_novel_super": sup}
                                 for s, (sub, sup) in aurocs.items()})


def test_group_table_shows_each_group_and_the_points_own_aurocs():
    front = [_point("t1", "vim", 0.8), _point("t2", "msp", 0.6)]
    table = render(front, groups=True).splitlines()
    assert table[0].split() == ["trial", "score", "tau_sup", "tau_sub", "seen", "unseen", "seen_acc",
                                "seen_shifted_acc", "novel_sub_acc", "novel_super_acc", "accept_shifted",
                                "auroc_novel_sub", "auroc_novel_super"]
    assert table[1].split()[-2:] == ["0.720", "0.880"] and table[2].split()[-2:] == ["0.610", "0.930"]
    assert "seen_acc" not in render(front)  # the plain table is unchanged


def test_point_report_names_the_best_score_per_novel_group():
    lines = point_report(_point("t1", "vim", 0.8)).splitlines()
    rows = {line.split()[0]: line for line in lines[4:7]}
    assert rows["vim"].split()[1] == "0.720*" and rows["msp"].split()[2] == "0.930*"
    assert "*" not in rows["knn"]  # NaN never wins
    assert "seen_shifted 0.700" in lines[1] and "both levels 0.750" in lines[2]
