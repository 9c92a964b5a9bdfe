"""Evaluation on the held-out test split: metrics, fairness by group, plots, and what the model looks at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import torch
from torch import nn

from slipway_trainer.train.data import Dataset, Split
from slipway_trainer.train.loop import classification_scores, metric_direction

MAX_GROUPS = 20


def predict(model: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            outputs.append(model(torch.from_numpy(x[start : start + batch])).float().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 1), dtype=np.float32)


def probabilities(outputs: np.ndarray) -> np.ndarray:
    if outputs.shape[1] == 1:  # one logit (bce): P(class 1)
        p1 = 1 / (1 + np.exp(-outputs[:, 0]))
        return np.stack([1 - p1, p1], axis=1)
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def scores(dataset: Dataset, outputs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if dataset.task == "regression":
        p = outputs[:, 0].astype(np.float64)
        t = y.astype(np.float64)
        mse = float(np.mean((p - t) ** 2))
        variance = float(np.var(t))
        return {
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "mae": float(np.mean(np.abs(p - t))),
            "r2": 1 - mse / variance if variance > 0 else 0.0,
            "baseline_mse": variance,
        }  # the mean predictor's MSE on this split
    classes = dataset.num_classes
    predicted = probabilities(outputs).argmax(1)
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (y, predicted), 1)
    result: dict[str, Any] = dict(classification_scores(matrix.astype(float)))
    tp = np.diag(matrix).astype(float)
    names = dataset.class_names
    per_class = {}
    for i in range(classes):
        precision = tp[i] / matrix[:, i].sum() if matrix[:, i].sum() else 0.0
        recall = tp[i] / matrix[i].sum() if matrix[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[names[i] if i < len(names) else str(i)] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": int(matrix[i].sum()),
        }
    result["per_class"] = per_class
    result["confusion_matrix"] = matrix.tolist()
    if classes == 2:
        result["roc_auc"] = roc_auc(probabilities(outputs)[:, 1], y)
    return result


def roc_auc(score: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def fairness(dataset: Dataset, split: Split, outputs: np.ndarray, features: list[str], metric: str) -> dict[str, Any]:
    """The metric per group of each sensitive feature, and the largest gap between groups."""
    report: dict[str, Any] = {}
    for feature in features:
        if feature not in split.table.column_names:
            report[feature] = {
                "error": f"{feature!r} is not a column of the test split "
                f"(columns: {', '.join(split.table.column_names)})"
            }
            continue
        values = np.asarray([str(v) for v in split.table.column(feature).to_pylist()])
        groups = {}
        for value in sorted(set(values.tolist()))[:MAX_GROUPS]:
            mask = values == value
            group_scores = scores(dataset, outputs[mask], split.y[mask])
            groups[value] = {"rows": int(mask.sum()), metric: round(float(group_scores.get(metric, float("nan"))), 6)}
        measured = [g[metric] for g in groups.values() if np.isfinite(g[metric])]
        report[feature] = {
            "metric": metric,
            "groups": groups,
            "largest_gap": round(max(measured) - min(measured), 6) if measured else None,
        }
    return report


def permutation_importance(
    model: nn.Module, dataset: Dataset, split: Split, metric: str, seed: int = 0, rows: int = 2000, repeats: int = 5
) -> dict[str, float]:
    """How much the metric worsens when one raw input column is shuffled (tabular models), averaged over `repeats`
    shuffles: scikit-learn's `permutation_importance`. It shuffles the columns of a frame of row positions; the
    score takes each column's values at its positions, so every column keeps its Arrow type through the transform."""
    import pandas as pd
    from sklearn.inspection import permutation_importance as shuffled_importance

    table = split.table.slice(0, rows)
    names = dataset.transform.input_columns()
    sign = 1.0 if metric_direction(metric) == "maximize" else -1.0  # scikit-learn: greater is better

    def score(_: object, positions: pd.DataFrame, y: np.ndarray) -> float:
        taken = table
        for name in names:
            column = table.column(name).take(pa.array(positions[name].to_numpy()))
            taken = taken.set_column(table.column_names.index(name), name, column)
        return sign * float(scores(dataset, predict(model, dataset.transform.features(taken)), y)[metric])

    positions = pd.DataFrame({name: np.arange(table.num_rows) for name in names})
    found = shuffled_importance(
        _Fitted(), positions, split.y[:rows], scoring=score, n_repeats=repeats, random_state=seed
    )
    importance = {name: round(float(mean), 6) for name, mean in zip(names, found.importances_mean, strict=True)}
    return dict(sorted(importance.items(), key=lambda kv: -kv[1]))


class _Fitted:
    """The trained model as scikit-learn's inspection tools expect an estimator: already fitted (the score above
    calls the model itself)."""

    def fit(self, *_: object) -> _Fitted:
        return self


def saliency(model: nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|Integrated Gradients| of the predicted class summed over channels: (n, H, W); the predicted classes: (n,)).
    Captum's Integrated Gradients from an all-zero input (black for [0, 1] images, the mean image for standardized
    ones): each pixel's share of the class
    score's change from that baseline, which adds up to the change (unlike raw gradients, which are noisy and say
    how sensitive a pixel is, not how much it contributed)."""
    from captum.attr import IntegratedGradients

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    model.eval()
    with torch.no_grad():
        out = model(x)
    chosen = out.argmax(1) if out.shape[1] > 1 else torch.zeros(len(x), dtype=torch.long)
    attributions = IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=chosen, n_steps=32, internal_batch_size=256
    )
    return attributions.detach().abs().sum(1).numpy(), chosen.numpy()


def saliency_png(model: nn.Module, dataset: Dataset, split: Split, path: Path, count: int = 8) -> None:
    """Integrated Gradients saliency of the predicted class for a few test images, beside the images."""
    images = split.x[:count]
    count = len(images)
    heat, chosen = saliency(model, images)
    fig, axes = plt.subplots(2, count, figsize=(count * 1.4, 3.2), squeeze=False)
    names = dataset.class_names
    for i in range(count):
        picture = images[i].transpose(1, 2, 0)
        axes[0, i].imshow(picture.squeeze(), cmap="gray" if picture.shape[2] == 1 else None)
        label = names[int(chosen[i])] if int(chosen[i]) < len(names) else str(int(chosen[i]))
        axes[0, i].set_title(label, fontsize=7)
        axes[1, i].imshow(heat[i], cmap="inferno")
        for ax in (axes[0, i], axes[1, i]):
            ax.axis("off")
    fig.suptitle("Saliency (Integrated Gradients): the pixels that made the predicted class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_png(history: list[dict[str, Any]], objective: str, path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["val_loss"] for h in history], label="validation")
    left.set_title("loss")
    left.set_xlabel("epoch")
    left.legend()
    name = objective.removeprefix("val_")
    if f"train_{name}" in history[0]:
        right.plot(epochs, [h[f"train_{name}"] for h in history], label="train")
    right.plot(epochs, [h[objective] for h in history], label="validation")
    right.set_title(name)
    right.set_xlabel("epoch")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_png(matrix: list[list[int]], names: list[str], path: Path) -> None:
    data = np.asarray(matrix)
    size = max(4.0, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(data):
        ax.text(
            j, i, str(value), ha="center", va="center", fontsize=7, color="white" if value > data.max() / 2 else "black"
        )
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
