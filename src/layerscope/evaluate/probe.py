"""Linear probes per layer: how much of a labelled property each layer's pooled embedding holds.

The paper's vision experiments score each layer with a probe trained on its embeddings; for models
and data outside MTEB (images) this is the downstream score. One scikit-learn logistic regression
per layer on standardized features, on the same seeded stratified train/test split for every layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from layerscope.errors import LayerscopeError

__all__ = ["linear_probe"]


def linear_probe(
    pooled: np.ndarray,
    labels: np.ndarray,
    *,
    layers: list[int] | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_iter: int = 1000,
    regularization: float = 1.0,
) -> pd.DataFrame:
    """Test accuracy of a logistic-regression probe trained on each layer's embeddings.

    Parameters
    ----------
    pooled : array, shape (layers, n, d)
        Pooled embeddings of every layer.
    labels : array of int, shape (n,)
    layers : list of int, optional
        Canonical index of each slice (default 0..layers-1).
    test_fraction : float
        Held-out share of each class (stratified, seeded: the same split for every layer).
    seed : int
    max_iter, regularization : int, float
        Of ``LogisticRegression`` (``C = regularization``).

    Returns
    -------
    pandas.DataFrame
        ``layer, accuracy, chance`` (chance = share of the most frequent class in the test set),
        ``n_train, n_test``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    pooled = np.asarray(pooled, dtype=np.float64)
    labels = np.asarray(labels)
    if pooled.ndim != 3 or pooled.shape[1] != len(labels):
        raise LayerscopeError(f"pooled must be (layers, n, d) with n = {len(labels)} labels, got {pooled.shape}")
    if not np.isfinite(pooled).all():
        raise LayerscopeError("the embeddings hold NaN or inf values")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise LayerscopeError("a probe needs at least 2 classes")
    if counts.min() < 2:
        raise LayerscopeError(f"every class needs at least 2 examples for a stratified split (class {classes[counts.argmin()]} has 1)")
    positions = np.arange(len(labels))
    train, test = train_test_split(positions, test_size=test_fraction, random_state=seed, stratify=labels)
    chance = float(np.max(np.unique(labels[test], return_counts=True)[1]) / len(test))
    layers = list(range(pooled.shape[0])) if layers is None else list(layers)
    rows = []
    for index, layer in enumerate(layers):
        scaler = StandardScaler().fit(pooled[index, train])
        probe = LogisticRegression(max_iter=max_iter, C=regularization)
        probe.fit(scaler.transform(pooled[index, train]), labels[train])
        accuracy = float((probe.predict(scaler.transform(pooled[index, test])) == labels[test]).mean())
        rows.append({"layer": layer, "accuracy": accuracy, "chance": chance, "n_train": len(train), "n_test": len(test)})
    return pd.DataFrame(rows)
