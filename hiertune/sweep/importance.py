"""Which sampled parameters mattered, per objective: Optuna's fANOVA evaluator on the sweep's
persisted study (hiertune.sweep.search), printed at the end of a sweep and logged as a plot.

The objectives are the study's own values (the trial front's hypervolume, or seen and unseen
under NSGA-II) and, when the searcher recorded them, the seen and unseen accuracy of each
trial's recommended point. Optuna counts completed trials only: trials ASHA stopped early were
measured at a lower fidelity and would mislead it.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from hiertune.sweep.plots import plot_importances

MIN_TRIALS = 2  # fANOVA needs two finished trials to compare


def param_importances(storage_url: str, study_name: str, objectives: list[str]) -> dict[str, dict[str, float]]:
    """{objective: {param: importance}}; empty when too few trials finished."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS or not any(t.params for t in done):
        return {}
    targets = {name: (lambda t, i=i: t.values[i]) for i, name in enumerate(objectives[:len(done[0].values)])}
    for key in ("seen", "unseen"):
        if key not in targets and all(key in t.user_attrs for t in done):
            targets[key] = lambda t, key=key: t.user_attrs[key]
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return {name: optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
            for name, target in targets.items()}


def write_importances(importances: dict[str, dict[str, float]], path: Path, title: str) -> Path | None:
    if not importances:
        return None
    plot_importances(importances, path, title)
    return path


def render(importances: dict[str, dict[str, float]]) -> str:
    if not importances:
        return f"parameter importance: needs at least {MIN_TRIALS} trials that ran to the end"
    params = sorted({p for imp in importances.values() for p in imp},
                    key=lambda p: -sum(imp.get(p, 0.0) for imp in importances.values()))
    width = max(len(p) for p in params)
    head = "parameter importance (Optuna fANOVA, finished trials): " + ", ".join(importances)
    rows = [f"  {p.ljust(width)}  " + "  ".join(f"{name} {imp.get(p, 0.0):.2f}" for name, imp in importances.items())
            for p in params]
    return "\n".join([head, *rows])
