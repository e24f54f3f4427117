"""The built-in novelty scores, each registered with what it needs (hiertune.novelty.registry).

Logits only: msp (the seeds'), energy, maxlogit, gen, over the seen logits (the allowed ones at
the subclass level). Feature space: mahalanobis and knn (Lee et al. 2018; Sun et al. 2022), and
the OpenOOD v1.5 leaders rmds, fdbd, scale and vim on the level's head (hiertune.novelty.ood_scores).
What depends on features alone goes through the trial's memo, so it is computed once while the
features stay the same, and levels that read one feature share it.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from hiertune.novelty.memo import memo_get
from hiertune.novelty.ood_scores import allowed_logits, gen, scale_ratio
from hiertune.novelty.registry import LevelInput, register_score


def _seen(level: LevelInput) -> Tensor:
    return allowed_logits(level.logits[:, :level.n_seen], level.mask)


@register_score("msp", bounds=(0.0, 1.0))
def msp(level: LevelInput) -> Tensor:
    # The largest allowed probability of the softmax over every logit: mass the novel logit or a
    # masked-out class takes is mass no allowed class can claim.
    return (_seen(level).amax(1) - level.logits.logsumexp(1)).exp()


@register_score("energy")
def energy_score(level: LevelInput) -> Tensor:
    return _seen(level).logsumexp(1)


@register_score("maxlogit")
def maxlogit(level: LevelInput) -> Tensor:
    return _seen(level).amax(1)


def _class_distances(level: LevelInput) -> Tensor:
    f, scorer = level.features, level.scorer
    return memo_get(level.memo, "class_distances", (f, scorer.means, scorer.whiten), lambda: scorer.distances(f))


@register_score("mahalanobis", needs=("class_means", "covariance"), bounds=(-np.inf, 0.0))
def mahalanobis(level: LevelInput) -> Tensor:
    return level.scorer.nearest(_class_distances(level), level.mask)


@register_score("knn", needs=("train_features",), bounds=(-2.0, 0.0))  # minus a distance of unit vectors
def knn(level: LevelInput) -> Tensor:
    f, scorer, k = level.features, level.scorer, level.knn_k
    return memo_get(level.memo, f"knn{k}", (f, scorer.bank), lambda: scorer.knn(f, k))


@register_score("gen", bounds=(-np.inf, 0.0))
def gen_score(level: LevelInput) -> Tensor:
    return gen(_seen(level))


@register_score("rmds", needs=("class_means", "covariance", "head"))
def rmds(level: LevelInput) -> Tensor:
    f, head = level.features, level.scorer.head
    background = memo_get(level.memo, "background_distance", (f, head.mean, head.whiten),
                          lambda: head.background_distance(f))
    return mahalanobis(level) + background


def _head_outputs(level: LevelInput) -> tuple[Tensor, Tensor, Tensor]:
    """The head's inputs (features alone decide them), their products with its weights and its
    logits, shared within an epoch by fdbd, scale and vim (the head, hence its weight tensor, is
    new every epoch)."""
    f, head = level.features, level.scorer.head.head
    z = memo_get(level.memo, f"head_inputs{head.normalize}", (f,), lambda: head.inputs(f))
    products = memo_get(level.memo, "head_products", (z, head.weight), lambda: head.products(z))
    return z, products, memo_get(level.memo, "head_logits", (products, head.bias), lambda: products + head.bias)


@register_score("fdbd", needs=("head",), bounds=(0.0, np.inf))
def fdbd(level: LevelInput) -> Tensor:
    z, _, logits = _head_outputs(level)
    stats = level.scorer.head
    # The distance to the mean head input depends on the features alone (a linear head's mean
    # input is their mean), so a frozen backbone's is computed once.
    spread = memo_get(level.memo, "head_input_spread", (z, stats.head_mean), lambda: stats.spread(z))
    return stats.fdbd(level.features, level.argmax, z, logits, spread)


@register_score("scale", needs=("head",))
def scale(level: LevelInput) -> Tensor:
    z, products, _ = _head_outputs(level)
    ratio = memo_get(level.memo, "scale_ratio", (z,), lambda: scale_ratio(z))
    return level.scorer.head.scale(level.features, level.mask, z=z, products=products, ratio=ratio)


@register_score("vim", needs=("head", "principal_subspace"))
def vim(level: LevelInput) -> Tensor:
    z, _, logits = _head_outputs(level)
    return level.scorer.head.vim(level.features, level.mask, z, logits)
