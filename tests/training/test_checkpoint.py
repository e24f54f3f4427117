"""The checkpoint directory a trial writes, read back file by file through its one owner module."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from hiertune.training.config import TrialConfig
from hiertune.errors import UserError
from hiertune.models.registry import create_model
from hiertune.novelty.scores import load_scorers
from hiertune.training import checkpoint as ckpt
from hiertune.training.faults import CheckpointUnreadable
from hiertune.training.loop import heads_for, make_optimizer

@pytest.fixture(scope="module")
def trained(trained_cnn):
    """One epoch of a small cnn: its config, bundle, last metrics and a copy of its checkpoint."""
    return trained_cnn.cfg, trained_cnn.bundle, trained_cnn.metrics, trained_cnn.checkpoint


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN-safe equality


def test_checkpoint_holds_what_the_epoch_reported(trained):
    cfg, bundle, metrics, directory = trained
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [ckpt.MODEL, ckpt.STATE, ckpt.HISTORY, ckpt.POSTHOC, ckpt.SCORERS])
    # history: every epoch's metrics, exactly what was reported
    assert same([h.flat() for h in ckpt.read_history(str(directory))], [metrics.flat()])
    # post-hoc grid: the metrics it produced are the ones reported
    result = ckpt.read_posthoc(str(directory))
    assert result.recommended.score == metrics.recommended.score and result.hypervolume == metrics.hypervolume
    assert same(result.recommended.figures(), metrics.recommended.figures())
    assert same({s: f.figures() for s, f in result.by_score.items()},
                {s: f.figures() for s, f in metrics.by_score.items()})
    # optimizer/scheduler/RNG state: tensors and numbers only, for the epoch and attempt that wrote it
    state = torch.load(directory / ckpt.STATE, weights_only=True)
    assert (state["epoch"], state["attempt"]) == (1, 1)
    assert state["scheduler"]["last_epoch"] == len(bundle.for_trial(None).train_images) // cfg.batch_size
    # weights: a fresh model of the same family takes them whole
    model = create_model(cfg.model_config(), heads_for(bundle, cfg))
    model.load_state_dict(load_file(directory / ckpt.MODEL), strict=True)
    # feature scorers: one per level, sized to that level's seen classes
    scorers = load_scorers(directory / ckpt.SCORERS)
    heads = heads_for(bundle, cfg)
    assert set(scorers) == {"super", "sub"}
    assert scorers["super"].means.shape[0] == heads.n_super and scorers["sub"].means.shape[0] == heads.n_sub


def fresh_state(cfg: TrialConfig, bundle) -> ckpt.TrainState:
    model = create_model(cfg.model_config(), heads_for(bundle, cfg))
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return ckpt.TrainState(model, optimizer, scheduler, torch.Generator(), torch.Generator())


def test_restore_brings_back_the_training_state_as_the_next_attempt(trained):
    cfg, bundle, metrics, directory = trained
    restored = fresh_state(cfg, bundle)
    restored.restore(directory)
    # one epoch done by attempt 1: the restored run is attempt 2
    assert (restored.epoch, restored.attempt) == (1, 2) and same(restored.history, [metrics.flat()])
    saved = load_file(directory / ckpt.MODEL)
    assert all(torch.equal(v, saved[k]) for k, v in restored.model.state_dict().items())
    state = torch.load(directory / ckpt.STATE, weights_only=True)
    assert torch.equal(restored.order_gen.get_state(), state["order_rng"])
    assert torch.equal(restored.aug_gen.get_state(), state["aug_rng"])
    assert restored.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys() != set()
    assert restored.scheduler.state_dict()["last_epoch"] == state["scheduler"]["last_epoch"] > 0


def test_a_checkpoint_without_the_global_generators_still_restores(trained, tmp_path):
    """Checkpoints written before torch's global generators were saved."""
    cfg, bundle, metrics, directory = trained
    older = tmp_path / "older"
    shutil.copytree(directory, older)
    state = torch.load(older / ckpt.STATE, weights_only=True)
    del state["torch_rng"]
    torch.save(state, older / ckpt.STATE)
    restored = fresh_state(cfg, bundle)
    before = torch.get_rng_state()
    restored.restore(older)
    assert (restored.epoch, restored.attempt) == (1, 2) and same(restored.history, [metrics.flat()])
    assert torch.equal(torch.get_rng_state(), before)
    restored.restore(directory)
    assert torch.equal(torch.get_rng_state(), torch.load(directory / ckpt.STATE, weights_only=True)["torch_rng"])


def test_damaged_checkpoint_files_are_one_line(trained, tmp_path):
    cfg, bundle, _, directory = trained
    damaged = tmp_path / "damaged"
    shutil.copytree(directory, damaged)
    (damaged / ckpt.STATE).write_bytes((directory / ckpt.STATE).read_bytes()[:100])
    with pytest.raises(CheckpointUnreadable, match=f"^{damaged / ckpt.STATE}: unreadable or truncated checkpoint"):
        fresh_state(cfg, bundle).restore(damaged)
    (damaged / ckpt.HISTORY).write_text("[{")
    with pytest.raises(UserError, match=f"^{damaged / ckpt.HISTORY}: unreadable or truncated"):
        ckpt.read_history(str(damaged))
    (damaged / ckpt.POSTHOC).write_bytes(b"PK")
    with pytest.raises(UserError, match="unreadable post-hoc results"):
        ckpt.read_posthoc(str(damaged))
    assert ckpt.read_history(None) == [] and ckpt.read_history(str(tmp_path / "none")) == []


def test_a_checkpoint_of_another_model_says_what_does_not_fit(trained, tmp_path):
    """A readable checkpoint written for other heads (another dataset's classes), named as such."""
    cfg, bundle, _, directory = trained
    wider = fresh_state(replace(cfg, cnn_width=16), bundle)
    with pytest.raises(CheckpointUnreadable, match=r"the checkpoint does not fit this trial's model \(features\.0\.weight "
                                                    r"is \[8, 3, 3, 3\] there, \[16, 3, 3, 3\] in this trial's model"):
        wider.restore(directory)
