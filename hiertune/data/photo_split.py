"""Which of a user's own labeled photos (`--shifted-data`) train and which validate.

The competition's labeled images are generated and its outliers are real photos, so a model can
learn "a real photo is novel". Real photos of known subclasses in training break that shortcut;
the rest of them, and every photo of a held-out subclass, stay in validation's seen_shifted group,
where they show how a known species photographed for real is treated. The split is by image,
per subclass and seeded: the same photos train in every trial of a sweep, and none both trains
and validates.
"""

from __future__ import annotations

import numpy as np

from hiertune.errors import UserError


def training_rows(subclass: np.ndarray, fraction: float, holdout: np.ndarray, seed: int) -> np.ndarray:
    """Sorted indices of the photos that train: round(fraction · n) of each subclass's n photos,
    drawn by a seeded permutation per subclass, none of a subclass in `holdout`."""
    subclass = np.asarray(subclass)
    rows = []
    for s in np.unique(subclass):
        if s in holdout:
            continue
        members = np.flatnonzero(subclass == s)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 17, int(s)]))
        rows.append(rng.permutation(members)[:round(fraction * len(members))])
    return np.sort(np.concatenate(rows)) if rows else np.empty(0, dtype=np.int64)


def holdout_subclasses(names: tuple[str, ...], subclasses: tuple[str, ...], where: str) -> np.ndarray:
    """Indices of the subclasses named in `names`; an unknown name is a UserError."""
    index = {name: i for i, name in enumerate(subclasses)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise UserError(f"{where}: shifted_holdout names unknown subclass(es): {', '.join(map(repr, unknown[:5]))}")
    return np.array([index[n] for n in names], dtype=np.int64)
