"""The training loss: cross-entropy on both heads, outliers either as each head's novel class or
by outlier exposure, plus seed 000's KL term that ties the subclass head to the superclass head.

Mixup needs nothing here: the training loop mixes two calls, lam·loss(a) + (1 - lam)·loss(b).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hiertune.errors import UserError
from hiertune.models.registry import Heads, ModelOutput


@dataclass(frozen=True)
class LossConfig:
    # Weight of the KL interaction term (seed 000 A), 0 disables it. The one default: TrialConfig
    # takes it from here and zeroes it for families without the kl_loss trait.
    kl_alpha: float = 0.1
    kl_temperature: float = 1.0
    oe_weight: float = 0.5  # outlier_mode='oe': weight of the outlier-exposure term
    label_smoothing: float = 0.0
    # Outliers are real photos and the labeled images generated ones: an outlier row can teach
    # "real photo -> novel" rather than "unknown species -> novel". These bound what it teaches:
    # which heads see outlier rows at all (both | super | sub), and with outlier_mode 'class'
    # the weight of each outlier row in the cross-entropy (a labeled row weighs 1).
    outlier_levels: str = "both"
    outlier_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.kl_temperature > 0:
            raise UserError(f"kl_temperature must be > 0, got {self.kl_temperature}")
        if self.outlier_levels not in OUTLIER_LEVELS:
            raise UserError(f"outlier_levels must be one of {', '.join(OUTLIER_LEVELS)}; got {self.outlier_levels!r}")
        for name in ("kl_alpha", "oe_weight", "outlier_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing <= 1:
            raise UserError(f"label_smoothing must be in [0, 1], got {self.label_smoothing}")


LOSS_PARTS = ("loss_super", "loss_sub", "loss_kl", "loss_oe")
OUTLIER_LEVELS = ("both", "super", "sub")


def hierarchical_loss(out: ModelOutput, super_t: Tensor, sub_t: Tensor, heads: Heads, cfg: LossConfig,
                      outlier: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """total = loss_super + loss_sub + kl_alpha·loss_kl + oe_weight·loss_oe, and the four parts
    as one detached tensor in LOSS_PARTS order: kept on the device so a training step never
    waits for the GPU just to log (the loop reads them once per epoch).

    Targets are seen-class indices, or heads.n_super / heads.n_sub for novel. With a novel logit
    (outlier_mode 'class') that index is a class like any other and `outlier` is not needed.
    Without one ('oe'), a head's outlier rows are those whose target is its novel index, plus
    the rows of the boolean mask `outlier` if given; cross-entropy covers the other rows, and
    loss_oe is the cross-entropy from the uniform distribution to each head's softmax on its
    outlier rows (Hendrycks et al.), summed over the heads; its minimum is log of the class
    count, at the uniform softmax. loss_kl covers every row.
    """
    smoothing = cfg.label_smoothing
    on_super, on_sub = cfg.outlier_levels in ("both", "super"), cfg.outlier_levels in ("both", "sub")
    # A row is an outlier when its superclass target is novel (labeled rows never are).
    is_outlier = super_t == heads.n_super
    if outlier is not None:
        is_outlier = is_outlier | outlier
    if heads.novel_logit:
        loss_super = _weighted_cross_entropy(out.super_logits, super_t, is_outlier, on_super, cfg.outlier_weight,
                                             smoothing)
        loss_sub = _weighted_cross_entropy(out.sub_logits, sub_t, is_outlier, on_sub, cfg.outlier_weight, smoothing)
        loss_oe = out.super_logits.new_zeros((), dtype=torch.float32)
    else:
        super_out = super_t == heads.n_super
        sub_out = sub_t == heads.n_sub
        if outlier is not None:
            super_out, sub_out = super_out | outlier, sub_out | outlier
        loss_super = _seen_cross_entropy(out.super_logits, super_t, ~super_out, smoothing)
        loss_sub = _seen_cross_entropy(out.sub_logits, sub_t, ~sub_out, smoothing)
        loss_oe = ((_uniform_cross_entropy(out.super_logits, super_out) if on_super else 0.0)
                   + (_uniform_cross_entropy(out.sub_logits, sub_out) if on_sub else 0.0))
        loss_oe = torch.as_tensor(loss_oe, dtype=torch.float32, device=out.super_logits.device)
    # Not computed at weight 0: families without the interaction term would pay for it every step.
    loss_kl = (_interaction_kl(out.super_logits, out.sub_logits, heads, cfg.kl_temperature) if cfg.kl_alpha
               else out.super_logits.new_zeros((), dtype=torch.float32))
    total = loss_super + loss_sub + cfg.kl_alpha * loss_kl + cfg.oe_weight * loss_oe
    return total, torch.stack([loss_super, loss_sub, loss_kl, loss_oe]).detach().float()


def _weighted_cross_entropy(logits: Tensor, target: Tensor, outlier: Tensor, trains: bool, weight: float,
                            smoothing: float) -> Tensor:
    """Cross-entropy where outlier rows weigh `weight` (0 when this head does not train on them),
    normalised by the total weight; with every weight 1 it is the plain mean."""
    per_row = F.cross_entropy(logits, target, reduction="none", label_smoothing=smoothing)
    w = torch.where(outlier, weight if trains else 0.0, 1.0).to(per_row.dtype)
    return (per_row * w).sum() / w.sum().clamp(min=1e-12)


def _seen_cross_entropy(logits: Tensor, target: Tensor, rows: Tensor, smoothing: float) -> Tensor:
    # Summed then divided, so a batch without such rows gives 0 instead of the NaN of an empty mean.
    total = F.cross_entropy(logits[rows], target[rows], reduction="sum", label_smoothing=smoothing)
    return total / rows.sum().clamp(min=1)


def _uniform_cross_entropy(logits: Tensor, rows: Tensor) -> Tensor:
    per_row = -F.log_softmax(logits.float(), dim=1).mean(dim=1)
    return (per_row * rows).sum() / rows.sum().clamp(min=1)


def _interaction_kl(super_logits: Tensor, sub_logits: Tensor, heads: Heads, temperature: float) -> Tensor:
    """KL(p̂_super ‖ p_super), batch mean, with p̂_super[k] = Σ_{i∈S_k} p_sub[i], p = softmax(logits / T).

    Computed in log space (log p̂ is a logsumexp of subclass log-probabilities) so that tiny
    probabilities neither underflow nor produce infinite gradients. The novel subclass, where
    there is one, belongs to the novel superclass.
    """
    parents = heads.sub_to_super + ((heads.n_super,) if heads.novel_logit else ())
    device = sub_logits.device
    member = torch.tensor(parents, device=device)[:, None] == torch.arange(heads.super_outputs, device=device)
    log_p_sub = F.log_softmax(sub_logits.float() / temperature, dim=1)
    log_implied = torch.logsumexp(log_p_sub[:, :, None].masked_fill(~member, float("-inf")), dim=1)
    log_p_super = F.log_softmax(super_logits.float() / temperature, dim=1)
    # A superclass without subclasses has p̂ = 0 and adds nothing; leaving it out keeps -inf
    # (and 0·inf = NaN gradients) out of the computation.
    used = member.any(dim=0)
    return F.kl_div(log_p_super[:, used], log_implied[:, used], log_target=True, reduction="batchmean")
