import math

import pytest
import torch
import torch.nn.functional as F

from hiertune.errors import UserError
from hiertune.models.registry import Heads, ModelOutput
from hiertune.training.losses import LOSS_PARTS, LossConfig, hierarchical_loss

# Two seen superclasses; subclasses 0 and 1 are of superclass 0, subclass 2 of superclass 1.
SUB_TO_SUPER = (0, 0, 1)


def loss_and_parts(*args, **kwargs):
    total, parts = hierarchical_loss(*args, **kwargs)
    return total, dict(zip(LOSS_PARTS, parts.tolist()))


def heads(novel_logit: bool) -> Heads:
    return Heads(2, 3, SUB_TO_SUPER, novel_logit)


def output(super_logits, sub_logits) -> ModelOutput:
    s, u = torch.tensor(super_logits), torch.tensor(sub_logits)
    return ModelOutput(s, u, torch.zeros(len(s), 1), torch.zeros(len(u), 1))


def softmax(xs, t=1.0):
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(pk * math.log(pk / qk) for pk, qk in zip(p, q) if pk > 0)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_term_matches_hand_computation_without_novel_logit(temperature):
    super_logits, sub_logits = [[1.0, -1.0], [0.0, 0.5]], [[2.0, 0.0, -1.0], [-1.0, 0.0, 3.0]]
    expected = 0.0
    for s, u in zip(super_logits, sub_logits):
        p_sub = softmax(u, temperature)
        implied = [p_sub[0] + p_sub[1], p_sub[2]]
        expected += kl(implied, softmax(s, temperature)) / 2
    cfg = LossConfig(kl_alpha=0.3, kl_temperature=temperature)
    out = output(super_logits, sub_logits)
    total, parts = loss_and_parts(out, torch.tensor([0, 1]), torch.tensor([1, 2]), heads(False), cfg)
    assert parts["loss_kl"] == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(parts["loss_super"] + parts["loss_sub"] + 0.3 * expected, rel=1e-5)


def test_kl_term_maps_the_novel_subclass_to_the_novel_superclass():
    # With a novel logit: 3 superclass outputs (novel = 2), 4 subclass outputs (novel = 3).
    s, u = [0.5, -0.5, 1.0], [1.0, 0.0, -2.0, 2.0]
    p_sub = softmax(u)
    expected = kl([p_sub[0] + p_sub[1], p_sub[2], p_sub[3]], softmax(s))
    # By hand: p_sub = [0.2418, 0.0889, 0.0120, 0.6572], implied = [0.3307, 0.0120, 0.6572],
    # p_super = [0.3315, 0.1220, 0.5465]: KL = 0.0926.
    assert expected == pytest.approx(0.0926, abs=1e-4)
    _, parts = loss_and_parts(output([s], [u]), torch.tensor([2]), torch.tensor([3]), heads(True),
                                 LossConfig(kl_alpha=1.0))
    assert parts["loss_kl"] == pytest.approx(expected, rel=1e-5)


def test_kl_term_is_zero_when_heads_agree_and_finite_when_confident():
    # Subclass logits whose implied superclass probabilities equal the superclass softmax.
    out = output([[math.log(0.75), math.log(0.25)]], [[math.log(0.5), math.log(0.25), math.log(0.25)]])
    cfg = LossConfig(kl_alpha=1.0)
    _, parts = loss_and_parts(out, torch.tensor([0]), torch.tensor([0]), heads(False), cfg)
    assert parts["loss_kl"] == pytest.approx(0.0, abs=1e-6)
    logits = output([[300.0, -300.0]], [[-300.0, -300.0, 300.0]])
    logits.super_logits.requires_grad_(True)
    logits.sub_logits.requires_grad_(True)
    total, parts = loss_and_parts(logits, torch.tensor([0]), torch.tensor([2]), heads(False), cfg)
    total.backward()
    assert math.isfinite(parts["loss_kl"]) and parts["loss_kl"] > 100
    assert torch.isfinite(logits.super_logits.grad).all() and torch.isfinite(logits.sub_logits.grad).all()


def test_oe_terms_match_hand_computation():
    # Rows: seen (super 0, sub 1), seen (super 1, sub 2), outlier (novel indices 2 and 3).
    super_logits = [[2.0, 0.0], [0.5, 1.5], [3.0, -1.0]]
    sub_logits = [[0.0, 1.0, -1.0], [0.0, 0.0, 2.0], [1.0, 2.0, -2.0]]
    super_t, sub_t = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])

    def ce(logits, t):
        return -math.log(softmax(logits)[t])

    def uniform_ce(logits):
        return -sum(math.log(p) for p in softmax(logits)) / len(logits)

    loss_super = (ce(super_logits[0], 0) + ce(super_logits[1], 1)) / 2
    loss_sub = (ce(sub_logits[0], 1) + ce(sub_logits[1], 2)) / 2
    loss_oe = uniform_ce(super_logits[2]) + uniform_ce(sub_logits[2])
    cfg = LossConfig(kl_alpha=0.0, oe_weight=0.25)
    total, parts = loss_and_parts(output(super_logits, sub_logits), super_t, sub_t, heads(False), cfg)
    assert parts["loss_super"] == pytest.approx(loss_super, rel=1e-5)
    assert parts["loss_sub"] == pytest.approx(loss_sub, rel=1e-5)
    assert parts["loss_oe"] == pytest.approx(loss_oe, rel=1e-5)
    assert total.item() == pytest.approx(loss_super + loss_sub + 0.25 * loss_oe, rel=1e-5)
    # The same rows marked by mask instead of by their targets.
    mask = torch.tensor([False, False, True])
    _, by_mask = loss_and_parts(output(super_logits, sub_logits), torch.tensor([0, 1, 0]),
                                   torch.tensor([1, 2, 0]), heads(False), cfg, outlier=mask)
    assert by_mask == pytest.approx(parts)


def test_oe_minimum_is_the_uniform_softmax():
    out = output([[0.0, 0.0]], [[0.0, 0.0, 0.0]])
    _, parts = loss_and_parts(out, torch.tensor([2]), torch.tensor([3]), heads(False), LossConfig())
    assert parts["loss_oe"] == pytest.approx(math.log(2) + math.log(3), rel=1e-6)
    assert parts["loss_super"] == parts["loss_sub"] == 0.0  # no seen rows: zero, not NaN


def test_class_mode_treats_novel_as_a_class():
    super_logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
    sub_logits = torch.tensor([[0.0, 1.0, -1.0, 0.5], [0.0, 0.0, 2.0, 1.0]])
    super_t, sub_t = torch.tensor([0, 2]), torch.tensor([1, 3])
    cfg = LossConfig(label_smoothing=0.1)
    out = ModelOutput(super_logits, sub_logits, super_logits, sub_logits)
    _, parts = loss_and_parts(out, super_t, sub_t, heads(True), cfg)
    # The novel index is an ordinary class: the loss is plain cross-entropy over every row.
    assert parts["loss_super"] == pytest.approx(F.cross_entropy(super_logits, super_t, label_smoothing=0.1).item())
    assert parts["loss_sub"] == pytest.approx(F.cross_entropy(sub_logits, sub_t, label_smoothing=0.1).item())
    assert parts["loss_oe"] == 0.0


def test_oe_mode_leaves_outlier_rows_out_of_cross_entropy():
    # Row 1 is a seen superclass with a novel subclass: its superclass counts, its subclass is an outlier.
    super_t, sub_t = torch.tensor([0, 1]), torch.tensor([1, 3])
    a = output([[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0, -1.0], [5.0, -5.0, 0.0]])
    b = output([[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0, -1.0], [-5.0, 5.0, 1.0]])
    _, parts_a = loss_and_parts(a, super_t, sub_t, heads(False), LossConfig())
    _, parts_b = loss_and_parts(b, super_t, sub_t, heads(False), LossConfig())
    seen_sub = -math.log(softmax([0.0, 1.0, -1.0])[1])
    seen_super = (-math.log(softmax([2.0, 0.0])[0]) - math.log(softmax([0.0, 1.0])[1])) / 2
    assert parts_a["loss_sub"] == parts_b["loss_sub"] == pytest.approx(seen_sub)
    assert parts_a["loss_super"] == pytest.approx(seen_super)
    assert parts_a["loss_oe"] != parts_b["loss_oe"]


def test_loss_config_rejects_bad_values():
    with pytest.raises(UserError, match="^kl_temperature must be > 0"):
        LossConfig(kl_temperature=0.0)
    with pytest.raises(UserError, match="^oe_weight must be >= 0"):
        LossConfig(oe_weight=-1.0)
    with pytest.raises(UserError, match="^outlier_levels must be one of both, super, sub"):
        LossConfig(outlier_levels="none")
    with pytest.raises(UserError, match="^outlier_weight must be >= 0"):
        LossConfig(outlier_weight=-0.5)


def test_outlier_weight_and_levels_in_class_mode():
    # Row 0 is labeled (superclass 0, subclass 1); row 1 an outlier (novel at both levels).
    super_logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
    sub_logits = torch.tensor([[0.0, 1.0, -1.0, 0.5], [0.0, 0.0, 2.0, 1.0]])
    super_t, sub_t = torch.tensor([0, 2]), torch.tensor([1, 3])
    out = ModelOutput(super_logits, sub_logits, super_logits, sub_logits)
    ce_super = F.cross_entropy(super_logits, super_t, reduction="none")
    ce_sub = F.cross_entropy(sub_logits, sub_t, reduction="none")
    _, w = loss_and_parts(out, super_t, sub_t, heads(True), LossConfig(outlier_weight=0.25))
    assert w["loss_super"] == pytest.approx(((ce_super[0] + 0.25 * ce_super[1]) / 1.25).item(), rel=1e-6)
    assert w["loss_sub"] == pytest.approx(((ce_sub[0] + 0.25 * ce_sub[1]) / 1.25).item(), rel=1e-6)
    # One level only: the other head's loss is over the labeled row alone.
    _, sup = loss_and_parts(out, super_t, sub_t, heads(True), LossConfig(outlier_levels="super"))
    assert sup["loss_super"] == pytest.approx(ce_super.mean().item(), rel=1e-6)
    assert sup["loss_sub"] == pytest.approx(ce_sub[0].item(), rel=1e-6)
    _, sub = loss_and_parts(out, super_t, sub_t, heads(True), LossConfig(outlier_levels="sub"))
    assert sub["loss_super"] == pytest.approx(ce_super[0].item(), rel=1e-6)
    assert sub["loss_sub"] == pytest.approx(ce_sub.mean().item(), rel=1e-6)


def test_outlier_levels_in_oe_mode():
    out = output([[0.5, 0.0]], [[0.0, 2.0, 0.0]])
    outlier = (torch.tensor([2]), torch.tensor([3]))
    _, both = loss_and_parts(out, *outlier, heads(False), LossConfig())
    _, sup = loss_and_parts(out, *outlier, heads(False), LossConfig(outlier_levels="super"))
    _, sub = loss_and_parts(out, *outlier, heads(False), LossConfig(outlier_levels="sub"))
    uniform_super = -sum(math.log(p) for p in softmax([0.5, 0.0])) / 2
    uniform_sub = -sum(math.log(p) for p in softmax([0.0, 2.0, 0.0])) / 3
    assert both["loss_oe"] == pytest.approx(uniform_super + uniform_sub, rel=1e-6)
    assert sup["loss_oe"] == pytest.approx(uniform_super, rel=1e-6)
    assert sub["loss_oe"] == pytest.approx(uniform_sub, rel=1e-6)
