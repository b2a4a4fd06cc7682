"""Linear probes with scikit-learn's conventions, and their directions in the residual stream.

`LinearProbe` (classification) wraps `LogisticRegression` (or `LogisticRegressionCV` when
`cv` is given, which picks the regularisation C by cross-validation), optionally after a
`StandardScaler`. `RidgeProbe` does the same for continuous targets with `Ridge` / `RidgeCV`.
Both are scikit-learn estimators (`fit`, `predict`, `score`, `get_params`, `clone` work).

`probe.direction()` is the probe's weight vector mapped back to the residual stream (the
scaler undone: a weight w on standardised features is w / sigma on raw activations), as a unit
torch tensor, ready to be a steering direction; `cosine(a, b)` compares two directions.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted


def _as_2d(X: Any) -> np.ndarray:
    if hasattr(X, "detach"):  # torch tensor
        X = X.detach().float().cpu().numpy()
    X = np.asarray(X)
    if X.ndim == 1:
        raise ValueError(f"activations must be [n_examples, d_model], got a 1-d array of {X.shape[0]}; use X.reshape(1, -1) for one example")
    if X.ndim != 2:
        raise ValueError(f"activations must be [n_examples, d_model], got shape {X.shape}")
    return X


def _supported(cls: type, **kwargs: Any) -> dict[str, Any]:
    """Keep only the keyword arguments this scikit-learn version accepts (quiets deprecations)."""
    params = inspect.signature(cls).parameters
    return {k: v for k, v in kwargs.items() if k in params}


class _Directional:
    """Shared: the scaler, and the weight vector mapped back to raw activation space."""

    standardize: bool

    def _scale_fit(self, X: np.ndarray) -> np.ndarray:
        if self.standardize:
            self.scaler_ = StandardScaler().fit(X)
            return self.scaler_.transform(X)
        self.scaler_ = None
        return X

    def _scale(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = _as_2d(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"this probe was fitted on {self.n_features_in_} features, got {X.shape[1]}; use activations of the same hook")
        return self.scaler_.transform(X) if self.scaler_ is not None else X

    def _raw_weights(self, coef: np.ndarray) -> np.ndarray:
        if self.scaler_ is None:
            return coef
        scale = np.where(self.scaler_.scale_ == 0, 1.0, self.scaler_.scale_)
        return coef / scale

    def _unit_tensor(self, w: np.ndarray, normalize: bool):
        w = np.asarray(w, dtype=np.float64)
        if normalize:
            norm = np.linalg.norm(w)
            if norm == 0:
                raise ValueError("the probe's weights are all zero; it learned no direction (too strong regularisation?)")
            w = w / norm
        return torch.tensor(w, dtype=torch.float32)


class LinearProbe(_Directional, ClassifierMixin, BaseEstimator):
    """A logistic-regression probe: `fit(X, y)`, `predict`, `predict_proba`, `score` (accuracy).

    `C`: inverse regularisation strength. `cv`: folds for choosing C by cross-validation among
    `Cs` (10 values on a log grid, or a list), via `LogisticRegressionCV`; None fits with `C`.
    `standardize`: scale features to zero mean and unit variance first (the direction is mapped
    back). `class_weight`: e.g. "balanced" for skewed classes.
    """

    def __init__(
        self, C: float = 1.0, standardize: bool = True, cv: int | None = None, Cs: Any = 10,
        max_iter: int = 2000, class_weight: Any = None, random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.standardize = standardize
        self.cv = cv
        self.Cs = Cs
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> "LinearProbe":
        X = _as_2d(X)
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"got {len(y)} labels for {len(X)} examples; give exactly one label per example")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"all {len(y)} labels are the same class ({classes[0].item() if len(classes) else None!r}); "
                "a probe needs at least two classes: add examples of another class"
            )
        self.n_features_in_ = X.shape[1]
        Xs = self._scale_fit(X)
        if self.cv:
            min_class = min(np.sum(y == c) for c in classes)
            folds = max(2, min(int(self.cv), int(min_class)))
            model = LogisticRegressionCV(**_supported(
                LogisticRegressionCV, Cs=self.Cs, cv=folds, max_iter=self.max_iter, class_weight=self.class_weight,
                random_state=self.random_state, l1_ratios=(0.0,), scoring="accuracy", use_legacy_attributes=False,
            ))
        else:
            model = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight, random_state=self.random_state)
        model.fit(Xs, y)
        self.model_ = model
        self.classes_ = model.classes_
        self.C_ = float(np.ravel(model.C_)[0]) if self.cv else float(self.C)
        self.coef_ = self._raw_weights(model.coef_)  # [1 or n_classes, d] on raw activations
        self.intercept_ = model.intercept_ - (
            (model.coef_ * (self.scaler_.mean_ / np.where(self.scaler_.scale_ == 0, 1.0, self.scaler_.scale_))).sum(axis=1)
            if self.scaler_ is not None else 0.0
        )
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return self.model_.decision_function(self._scale(X))

    def predict(self, X: Any) -> np.ndarray:
        return self.model_.predict(self._scale(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model_.predict_proba(self._scale(X))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on (X, y)."""
        return float(accuracy_score(np.asarray(y), self.predict(X), sample_weight=sample_weight))

    def direction(self, cls: Any = None, normalize: bool = True):
        """The probe's direction in the residual stream as a unit torch tensor [d_model].

        Binary: it points toward `classes_[1]` (e.g. "positive" of negative/positive). With more
        classes, name the class `cls` (its one-vs-rest direction). Moving activations along it
        raises the probe's score for that class.
        """
        check_is_fitted(self, "model_")
        if len(self.classes_) == 2:
            w = self.coef_[0]
            if cls is not None:
                if cls not in self.classes_:
                    raise ValueError(f"{cls!r} is not a class of this probe; classes: {list(self.classes_)}")
                w = w if cls == self.classes_[1] else -w
        else:
            if cls is None:
                raise ValueError(f"a probe over {len(self.classes_)} classes has one direction per class; pass cls= one of {list(self.classes_)}")
            hits = np.flatnonzero(self.classes_ == cls)
            if not len(hits):
                raise ValueError(f"{cls!r} is not a class of this probe; classes: {list(self.classes_)}")
            w = self.coef_[hits[0]]
        return self._unit_tensor(w, normalize)


class RidgeProbe(_Directional, RegressorMixin, BaseEstimator):
    """A ridge-regression probe for continuous targets; `score` is R².

    `alpha`: regularisation strength; `cv` (folds, or True for efficient leave-one-out) picks it
    among `alphas` with `RidgeCV`. `standardize` as in `LinearProbe`.
    """

    def __init__(self, alpha: float = 1.0, standardize: bool = True, cv: int | bool | None = None, alphas: Any = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)) -> None:
        self.alpha = alpha
        self.standardize = standardize
        self.cv = cv
        self.alphas = alphas

    def fit(self, X: Any, y: Any) -> "RidgeProbe":
        X = _as_2d(X)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"targets must be one number per example, got shape {y.shape}")
        if len(y) != len(X):
            raise ValueError(f"got {len(y)} targets for {len(X)} examples; give exactly one target per example")
        if np.ptp(y) == 0:
            raise ValueError(f"all {len(y)} targets are the same value ({y[0]}); there is nothing to regress on")
        self.n_features_in_ = X.shape[1]
        Xs = self._scale_fit(X)
        if self.cv:
            model = RidgeCV(alphas=self.alphas, cv=None if self.cv is True else int(self.cv))
        else:
            model = Ridge(alpha=self.alpha)
        model.fit(Xs, y)
        self.model_ = model
        self.alpha_ = float(getattr(model, "alpha_", self.alpha))
        self.coef_ = self._raw_weights(model.coef_)
        self.intercept_ = float(model.intercept_ - (
            (model.coef_ * self.scaler_.mean_ / np.where(self.scaler_.scale_ == 0, 1.0, self.scaler_.scale_)).sum()
            if self.scaler_ is not None else 0.0
        ))
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.model_.predict(self._scale(X))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² on (X, y)."""
        return float(r2_score(np.asarray(y, dtype=np.float64), self.predict(X), sample_weight=sample_weight))

    def direction(self, normalize: bool = True):
        """The unit direction in the residual stream along which the prediction grows."""
        check_is_fitted(self, "model_")
        return self._unit_tensor(self.coef_, normalize)


def _as_vector(x: Any) -> np.ndarray:
    if isinstance(x, (LinearProbe, RidgeProbe)):
        x = x.direction()
    elif hasattr(x, "direction") and callable(x.direction):
        x = x.direction()
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        v = v.reshape(-1) if v.size == max(v.shape) else v
    if v.ndim != 1:
        raise ValueError(f"a direction is one vector [d_model], got shape {v.shape}")
    return v


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two directions (torch tensors, numpy arrays, or fitted probes)."""
    u, v = _as_vector(a), _as_vector(b)
    if u.shape != v.shape:
        raise ValueError(f"directions of different sizes: {u.shape[0]} and {v.shape[0]}; compare directions from the same model")
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        raise ValueError("cosine of a zero vector is undefined")
    return float(u @ v / (nu * nv))
