"""How separable two image sources are on a frozen backbone's features alone.

Every competition training image is generated and every outlier a real photo. If a linear probe
tells the two apart from features alone, a head trained to call outliers novel can learn the
source instead of the species ("real photo -> novel"). The measure is the cross-validated AUROC of
a logistic-regression probe: 0.5 means the sources look alike, 1.0 that the source alone
separates them.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hiertune.errors import UserError
from hiertune.novelty.metrics import auroc


def source_auroc(a: np.ndarray, b: np.ndarray, seed: int = 0, folds: int = 5, cap: int = 2000) -> float:
    """Cross-validated AUROC of a logistic probe telling rows of `a` ([N, D] features of one
    source) from rows of `b`; at most `cap` rows of each (a seeded draw), so a large pool costs
    what a small one does and neither source dominates the fit."""
    rng = np.random.default_rng(seed)
    a, b = (x.reshape(len(x), -1) for x in (np.asarray(a), np.asarray(b)))
    if min(len(a), len(b)) < folds:
        raise UserError(f"source probe: needs at least {folds} images of each source (got {len(a)} and {len(b)})")
    a, b = (x[np.sort(rng.choice(len(x), cap, replace=False))] if len(x) > cap else x for x in (a, b))
    x = np.concatenate([a, b]).astype(np.float64)
    y = np.concatenate([np.zeros(len(a), dtype=int), np.ones(len(b), dtype=int)])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    score = cross_val_predict(probe, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                              method="decision_function")
    return auroc(score[y == 1], score[y == 0])
