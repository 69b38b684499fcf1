"""A small, seeded k-means (k-means++ seeding, then Lloyd iterations) in torch.

Deterministic for a given seed and input: the seeding draws from its own `torch.Generator`,
assignment ties go to the lowest index and an emptied cluster is re-seeded with the point
farthest from its centroid. Distances are computed in chunks of rows, so memory stays
O(chunk * k) whatever the number of points.

    codebook = fit_kmeans(frames, k=100, seed=0)    # frames [N, D]
    units = codebook.predict(frames)                # [N] int64 in [0, k)
    codebook.save("exp/pretrain/kmeans.safetensors")

Features are standardised per dimension (mean and std of the fitted points) before
clustering, so MFCC coefficients with large ranges (c0) do not dominate the distances; the
codebook stores that normalisation and applies it in `predict`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from sprune.errors import UserError
from sprune.io import atomic_path

CHUNK_ROWS = 16384


@dataclass
class Codebook:
    """centroids [k, D] in standardised space; mean, std [D] of the standardisation."""

    centroids: Tensor
    mean: Tensor
    std: Tensor
    inertia: float = float("nan")   # mean squared distance to the closest centroid (fit data)
    iterations: int = 0

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def standardise(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std

    def predict(self, x: Tensor) -> Tensor:
        """Closest centroid of each row: [N, D] -> [N] int64."""
        return assign(self.standardise(x), self.centroids)[0]

    def save(self, path: str | os.PathLike) -> None:
        tensors = {"centroids": self.centroids.contiguous(), "mean": self.mean.contiguous(),
                   "std": self.std.contiguous()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"inertia": repr(self.inertia),
                                                   "iterations": str(self.iterations)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Codebook":
        if not os.path.isfile(path):
            raise UserError(f"k-means codebook {path} does not exist")
        tensors = load_file(str(path))
        missing = {"centroids", "mean", "std"} - set(tensors)
        if missing:
            raise UserError(f"{path}: not a k-means codebook (lacks '{sorted(missing)[0]}'); "
                            "delete it to fit a new one")
        return cls(tensors["centroids"], tensors["mean"], tensors["std"])


def squared_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """||x_i - c_j||^2: [N, D], [k, D] -> [N, k] (clamped at 0 against rounding)."""
    return (x.pow(2).sum(1, keepdim=True) - 2.0 * x @ centroids.T
            + centroids.pow(2).sum(1)[None, :]).clamp(min=0.0)


def assign(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Closest centroid and its squared distance for each row: -> ([N] int64, [N] float)."""
    labels = torch.empty(x.shape[0], dtype=torch.long)
    best = torch.empty(x.shape[0], dtype=x.dtype)
    for start in range(0, x.shape[0], CHUNK_ROWS):
        dist = squared_distances(x[start:start + CHUNK_ROWS], centroids)
        best[start:start + CHUNK_ROWS], labels[start:start + CHUNK_ROWS] = dist.min(1)
    return labels, best


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): [N, D] -> centroids [k, D].

    Each next centroid is a point drawn with probability proportional to its squared
    distance to the closest centroid so far (by inverting the cumulative distribution).
    """
    picks = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    closest = (x - x[picks[0]]).pow(2).sum(1)
    for _ in range(1, k):
        cumulative = torch.cumsum(closest.double(), 0)
        total = float(cumulative[-1])
        if total <= 0.0:  # fewer distinct points than clusters: any point will do
            pick = int(torch.randint(x.shape[0], (1,), generator=generator))
        else:
            draw = torch.rand(1, generator=generator, dtype=torch.float64) * total
            pick = min(int(torch.searchsorted(cumulative, draw, right=True)), x.shape[0] - 1)
        picks.append(pick)
        closest = torch.minimum(closest, (x - x[pick]).pow(2).sum(1))
    return x[picks].clone()


def lloyd(x: Tensor, centroids: Tensor, max_iter: int, tol: float = 1e-6
          ) -> tuple[Tensor, float, int]:
    """Lloyd iterations from `centroids` [k, D] until the assignment stops changing, the
    inertia improves by less than `tol` (relative) or `max_iter`; -> (centroids, inertia, its)."""
    k = centroids.shape[0]
    labels, dist = assign(x, centroids)
    inertia = float(dist.mean())
    iterations = 0
    for iterations in range(1, max_iter + 1):
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        centroids = sums / counts.clamp(min=1.0)[:, None]
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = int(torch.argmax(dist))   # re-seed with the worst-served point
            centroids[empty] = x[far]
            dist[far] = 0.0
        new_labels, dist = assign(x, centroids)
        new_inertia = float(dist.mean())
        converged = bool(torch.equal(new_labels, labels)) or (
            inertia - new_inertia <= tol * max(inertia, 1e-12))
        labels, inertia = new_labels, new_inertia
        if converged:
            break
    return centroids, inertia, iterations


def fit_kmeans(x: Tensor, k: int, seed: int = 0, max_iter: int = 100) -> Codebook:
    """Cluster the rows of `x` [N, D] into `k` clusters (standardised features)."""
    if x.dim() != 2 or x.shape[0] < k:
        raise UserError(f"k-means needs at least k = {k} frames to cluster, got "
                        f"{x.shape[0] if x.dim() == 2 else 0}; use more audio or a smaller k")
    x = x.float()
    mean = x.mean(0)
    std = x.std(0).clamp(min=1e-5)
    z = (x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    centroids, inertia, iterations = lloyd(z, kmeans_plus_plus(z, k, generator), max_iter)
    return Codebook(centroids, mean, std, inertia, iterations)
