"""The classical baseline every train report carries: an RBF SVM with C and gamma chosen by
3-fold cross-validation on the training pixels alone.

Why in every report: a user's first question on their own scene is whether the deep model earns
its cost over a kernel SVM on the same labels. The fit works on any feature matrix, so the
centralised trainer feeds it the pixel values of all modalities (``svm_baseline``) and a
federated report can feed it whatever the party holding the labels is allowed to see (the
stations' wire codes of the training pixels, say) through ``svm_on_features``.
"""

from __future__ import annotations

import time

import numpy as np

from feddiff.data.scene import Scene
from feddiff.data.sources import PatchSource, PixelSet, pixel_sets, sources
from feddiff.metrics import classification_metrics

C_GRID = (1.0, 10.0, 100.0, 1000.0)
GAMMA_SCALE = (0.1, 0.3, 1.0, 3.0)  # times sklearn's "scale" gamma, 1 / (n_features * var(X))


def fit_rbf_svm(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """(fitted SVC, {"C", "gamma", "cv_oa"}): grid search over C x gamma with stratified 3-fold
    CV (2 folds when a class has only two pixels; no CV at all below that)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    base_gamma = 1.0 / (x.shape[1] * max(float(x.var()), 1e-12))
    grid = {"C": list(C_GRID), "gamma": [base_gamma * s for s in GAMMA_SCALE]}
    counts = np.bincount(y)
    folds = min(3, int(counts[counts > 0].min())) if counts.any() else 0
    if folds < 2:
        clf = SVC(kernel="rbf", C=100.0, gamma=base_gamma).fit(x, y)
        return clf, {"C": 100.0, "gamma": base_gamma, "cv_oa": None}
    search = GridSearchCV(SVC(kernel="rbf"), grid, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=1)
    search.fit(x, y)
    best = search.best_params_
    return search.best_estimator_, {"C": float(best["C"]), "gamma": float(best["gamma"]), "cv_oa": float(search.best_score_)}


def svm_on_features(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, num_classes: int, seed: int = 0
) -> dict:
    """The baseline row: test metrics of the CV-chosen RBF SVM, its parameters and seconds."""
    t0 = time.perf_counter()
    clf, info = fit_rbf_svm(train_x, train_y, seed)
    t1 = time.perf_counter()
    pred = clf.predict(test_x) if test_x.shape[0] else np.zeros(0, np.int64)
    metrics = classification_metrics(test_y, pred, num_classes)
    return {
        "method": "rbf_svm",
        **{k: metrics[k] for k in ("oa", "aa", "kappa", "per_class")},
        **info,
        "train_pixels": int(train_x.shape[0]),
        "features": int(train_x.shape[1]),
        "seconds": {"fit": t1 - t0, "predict": time.perf_counter() - t1},
    }


def pixel_features(srcs: dict[str, PatchSource], pixels: PixelSet) -> np.ndarray:
    """(N, sum of bands) values of each pixel from patch-size-1 sources (normalised as the
    sources were: on the training pixels)."""
    return np.concatenate([s.patches(pixels.rows, pixels.cols).reshape(len(pixels), -1).numpy() for s in srcs.values()], axis=1)


def svm_baseline(scene: Scene, modalities: list[str], seed: int = 0) -> dict:
    """The RBF-SVM row on the scene's own split, pixel features of ``modalities``."""
    train, test = pixel_sets(scene)
    srcs = sources(scene, modalities, 1)
    return svm_on_features(pixel_features(srcs, train), train.labels, pixel_features(srcs, test), test.labels, scene.num_classes, seed)
