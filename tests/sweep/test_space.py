"""Search-space YAML: parsing, Optuna distributions, midpoints, and one clear line per error."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hiertune.errors import UserError
from hiertune.sweep.space import load_space, parse_assignments

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"

VALID = """
family: dualhead
fixed: {backbone: resnet18, epochs: 3}
search:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  finetune: {type: categorical, choices: [full, partial]}
  unfreeze_depth: {type: int, low: 1, high: 4, when: {finetune: [partial]}}
  outlier_count: {type: int, low: 0, high: 200, step: 50}
  tau_super: {type: float, low: 0.5, high: 1.0}
  novelty_score: {type: categorical, choices: [msp, energy]}
tune: {num_samples: 4, sampler: nsga2}
scheduler: {max_t: 3, grace_period: 1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in SPACES.glob("*.yaml")))
def test_shipped_spaces_parse(name):
    space = load_space(SPACES / name)
    assert space.trial_config().family == space.family
    assert {p.name for p in space.posthoc} <= {"tau_super", "tau_sub", "novelty_score"}


def test_distributions_and_posthoc_marking(tmp_path):
    space = load_space(write(tmp_path, VALID))
    params = {p.name: p for p in space.params}
    lr, count, finetune = params["lr"], params["outlier_count"], params["finetune"]
    assert (lr.type, lr.low, lr.high, lr.log, lr.step) == ("float", 1e-4, 1e-2, True, None)
    assert (count.type, count.low, count.high, count.log, count.step) == ("int", 0, 200, False, 50)
    assert (finetune.type, tuple(finetune.choices)) == ("categorical", ("full", "partial"))
    assert {p.name for p in space.posthoc} == {"tau_super", "novelty_score"}
    assert {p.name for p in space.sampled} == {"lr", "finetune", "unfreeze_depth", "outlier_count"}
    assert space.tune.sampler == "nsga2" and space.tune.num_samples == 4


def test_midpoints_defaults_and_conditions(tmp_path):
    space = load_space(write(tmp_path, VALID))
    cfg = space.trial_config()
    assert math.isclose(cfg.lr, 1e-3)  # geometric middle of a log range
    assert cfg.outlier_count == 100 and cfg.finetune == "full" and cfg.tau_super == 0.75
    assert cfg.unfreeze_depth == 2  # inactive for finetune=full: the dataclass default stays
    partial = space.trial_config({"finetune": "partial"})
    assert partial.unfreeze_depth == 2 and partial.finetune == "partial"
    params = {p.name: p for p in space.params}
    assert params["unfreeze_depth"].active({"finetune": "partial"})
    assert not params["unfreeze_depth"].active({"finetune": "full"})


def test_overrides_fix_a_searched_parameter_and_set_sections(tmp_path):
    space = load_space(write(tmp_path, VALID)).with_overrides(
        parse_assignments(["lr=0.05", "tune.num_samples=9", "epochs=1", "data=null"]))
    assert "lr" not in {p.name for p in space.params}
    cfg = space.trial_config()
    assert cfg.lr == 0.05 and cfg.epochs == 1 and cfg.data is None
    assert space.tune.num_samples == 9


def test_scientific_notation_without_a_dot_is_a_float(tmp_path):
    # YAML 1.1 alone reads 3e-3 as the string '3e-3', which the float field `lr` refused.
    assert parse_assignments(["lr=3e-3", "a=1.5e3", "b=-2E+2", "c=.5e1", "d=1.0e-3", "e=3e", "f=1e5x"]) == {
        "lr": 0.003, "a": 1500.0, "b": -200.0, "c": 5.0, "d": 0.001, "e": "3e", "f": "1e5x"}
    space = load_space(write(tmp_path, VALID.replace("low: 1.0e-4, high: 1.0e-2", "low: 1e-4, high: 1e-2")))
    assert {p.name: (p.low, p.high) for p in space.params}["lr"] == (1e-4, 1e-2)
    cfg = space.with_overrides(parse_assignments(["lr=3e-3", "weight_decay=1e-5"])).trial_config()
    assert cfg.lr == 0.003 and cfg.weight_decay == 1e-5


@pytest.mark.parametrize("text, message", [
    ("family: dualhead\nfixd: {}\n", "unknown key 'fixd' (did you mean 'fixed'?)"),
    ("family: dualhead\nfixed: {epoch: 3}\n", "fixed: unknown key 'epoch' (did you mean 'epochs'?)"),
    ("family: dualhead\nsearch: {lr: {type: float, low: 0.1, high: 0.01}}\n", "search.lr: low 0.1 > high 0.01"),
    ("family: dualhead\nsearch: {lr: {type: float, low: 0.0, high: 0.1, log: true}}\n",
     "search.lr: log scale needs low > 0, got 0.0"),
    ("family: dualhead\nsearch: {lr: {type: float, low: a, high: 0.1}}\n", "search.lr.low must be float, got 'a'"),
    ("family: dualhead\nfixed: {epochs: ten}\n", "epochs must be int, got 'ten'"),
    ("family: dualhead\nsearch: {lr: {type: floaty, low: 1, high: 2}}\n",
     "search.lr.type must be float, int or categorical, got 'floaty'"),
    ("family: dualhead\nsearch: {lr: {type: float, low: 1.0e-3, hihg: 0.1}}\n",
     "search.lr: unknown key 'hihg' (did you mean 'high'?)"),
    ("family: dualhead\nsearch: {optimizer: {type: categorical, choices: [adamw, lion]}}\n",
     "unknown optimizer 'lion'"),
    ("family: dualhed\n", "unknown family 'dualhed' (did you mean 'dualhead'?)"),
    ("family: dualhead\nfixed: {backbone: resnet81}\n", "unknown backbone 'resnet81' (did you mean 'resnet18'?)"),
    ("family: dualhead\ntune: {sampler: tpee}\n", "tune.sampler: unknown sampler 'tpee' (did you mean 'tpe'?)"),
    ("family: dualhead\ntune: {sampler: zz}\n", "tune.sampler: unknown sampler 'zz' (known: "),
    ("family: dualhead\nmlflow: {experiment: mine}\n", "mlflow.experiment is not supported: each sweep is its own"),
    ("family: dualhead\nscheduler: {max_t: 2, grace_period: 5}\n", "scheduler needs 1 <= grace_period <= max_t"),
    ("family: dualhead\nfixed: {epochs: 3\n", "malformed YAML at line 3, column 1"),
    ("- just\n- a list\n", "expected a mapping at the top level"),
    ("fixed: {}\n", "missing key 'family'"),
])
def test_space_errors_are_one_clear_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_space(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(str(path))


def test_cli_reports_space_errors_with_exit_2(cli, tmp_path):
    path = write(tmp_path, "family: dualhead\nsearch: {lr: {type: float, low: 0.1, high: 0.01}}\n")
    result = cli("train", str(path))
    assert result.code == 2
    assert result.err_lines == [f"hiertune: error: {path}: search.lr: low 0.1 > high 0.01"]


def test_bad_set_assignment(cli):
    result = cli("train", str(SPACES / "smoke.yaml"), "--set", "epochs")
    assert result.code == 2 and "--set 'epochs': expected key=value" in result.err


def test_the_posthoc_grid_is_what_the_space_declares(tmp_path):
    grid = load_space(write(tmp_path, VALID)).posthoc_grid()
    assert grid.scores == ("msp", "energy")  # only the declared choices
    assert grid.tau_super[0] == 0.5 and grid.tau_super[-1] == 1.0 and len(grid.tau_super) == 21
    assert all(0.5 <= t <= 1.0 for t in grid.tau_super)
    assert grid.tau_sub[0] == 0.0 and grid.tau_sub[-1] == 1.0  # not declared: the default, τ over [0, 1]
    declared = VALID.replace("  tau_super: {type: float, low: 0.5, high: 1.0}",
                             "  tau_super: {type: float, low: 0.01, high: 0.3, log: true}\n"
                             "  tau_sub: {type: float, low: 0.0, high: 0.4, step: 0.1}")
    grid = load_space(write(tmp_path, declared)).with_overrides({"novelty_score": "knn"}).posthoc_grid()
    assert grid.scores == ("knn",)  # fixed: itself
    assert grid.tau_super[0] == 0.01 and grid.tau_super[-1] == 0.3
    assert grid.tau_super[1] / grid.tau_super[0] == pytest.approx(grid.tau_super[-1] / grid.tau_super[-2])  # log
    assert grid.tau_sub == pytest.approx((0.0, 0.1, 0.2, 0.3, 0.4))  # on its step


@pytest.mark.parametrize("line", ["tau_super: {type: float, low: 0.5, high: 2.0}",
                                  "tau_sub: {type: categorical, choices: [0.1, -0.2]}"])
def test_a_threshold_that_is_no_share_of_images_is_refused_in_one_line(tmp_path, line):
    text = VALID.replace("  tau_super: {type: float, low: 0.5, high: 1.0}", f"  {line}")
    with pytest.raises(UserError, match=r"τ is the share of seen validation images called novel, in \[0, 1\]") as err:
        load_space(write(tmp_path, text))
    assert "\n" not in str(err.value)
