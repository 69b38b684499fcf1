"""Statistics and plots of language pathways (paper 003): per-language masks over shared weights.

A *pathway* is one language's `Mask` (parameter name -> bool tensor, True = kept) over the
same model and scope as every other language's. Given `masks = {"en": Mask, "fr": Mask, ...}`
(L languages, in the mapping's order):

    pairwise_iou(masks)        {(a, b): IOU of kept weights} for every pair a before b
    usage_counts(masks)        name -> int64 tensor [param shape]: languages keeping each weight
    sharing_histogram(masks)   [L + 1] shares of the scope's weights kept by exactly 0..L languages
    union(masks)               kept by at least one language (Dynamic ASR Pathways' union)
    residual(masks)            kept by no language: the weights adaptation may hand out again
    mask_drift(rounds)         IOU of consecutive rounds' masks (adaptive pruning's drift)

and the PNG plots `plot_pathway_iou` (IOU heatmap between languages), `plot_sharing_histogram`
(bar chart of the histogram) and `plot_mask_drift` (drift against round). All functions are
pure; masks of different models or scopes raise the same one-line `UserError` as
`Mask.iou` does.
"""
from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Mapping, Sequence

import torch

from sprune.errors import UserError
from sprune.prune.mask import Mask


def _languages(masks: Mapping[str, Mask], what: str) -> list[Mask]:
    """The masks in order, after checking there is one and all share one layout."""
    if not masks:
        raise UserError(f"cannot compute {what}: no language masks given; give one mask per "
                        "language")
    values = list(masks.values())
    for other in values[1:]:
        values[0]._check_same_layout(other, what)
    return values


# ---- the arithmetic ------------------------------------------------------------------------

def pairwise_iou(masks: Mapping[str, Mask]) -> dict[tuple[str, str], float]:
    """IOU of the kept weights of every pair of languages: {(a, b): iou}, a before b in the
    mapping's order (L (L - 1) / 2 entries; none for one language)."""
    _languages(masks, "pathway IOUs")
    names = list(masks)
    return {(a, b): masks[a].iou(masks[b])
            for i, a in enumerate(names) for b in names[i + 1:]}


def iou_table(masks: Mapping[str, Mask]) -> list[list[float]]:
    """The full symmetric IOU matrix [L][L] in the mapping's order (1.0 on the diagonal)."""
    pairs = pairwise_iou(masks)
    names = list(masks)
    return [[1.0 if a == b else pairs.get((a, b), pairs.get((b, a), 1.0)) for b in names]
            for a in names]


def usage_counts(masks: Mapping[str, Mask]) -> dict[str, torch.Tensor]:
    """How many languages keep each weight: name -> int64 tensor of the parameter's shape,
    values in 0..L."""
    values = _languages(masks, "pathway usage counts")
    return {name: torch.stack([m[name] for m in values]).sum(dim=0, dtype=torch.int64)
            for name in values[0]}


def sharing_histogram(masks: Mapping[str, Mask]) -> list[float]:
    """Share of the scope's weights kept by exactly 0, 1, ..., L languages: L + 1 fractions
    summing to 1 (all 0.0 for an empty scope). Entry 0 is the residual's share, entry L the
    weights every language shares."""
    counts = usage_counts(masks)
    bins = torch.zeros(len(masks) + 1, dtype=torch.int64)
    for tensor in counts.values():
        bins += torch.bincount(tensor.flatten(), minlength=len(masks) + 1)
    total = int(bins.sum())
    return [int(b) / total if total else 0.0 for b in bins]


def union(masks: Mapping[str, Mask]) -> Mask:
    """Weights kept by at least one language (the union of all pathways)."""
    return reduce(Mask.union, _languages(masks, "the union of pathways"))


def residual(masks: Mapping[str, Mask]) -> Mask:
    """Weights no language keeps (1 - union): in Dynamic ASR Pathways, adaptation for a
    language selects from its own mask plus this residual."""
    return Mask({name: ~kept for name, kept in union(masks).items()})


def mask_drift(rounds: Sequence[Mask]) -> list[float]:
    """IOU of each round's mask with the previous round's: len(rounds) - 1 values (the first
    compares rounds 0 and 1). 1.0 means the mask did not move."""
    return [before.iou(after) for before, after in zip(rounds, rounds[1:])]


# ---- plots ---------------------------------------------------------------------------------

def plot_pathway_iou(masks: Mapping[str, Mask], path: str | Path,
                     title: str = "IOU between language pathways") -> Path:
    """Heatmap [L x L] of the IOU between languages' kept weights, values in % on the cells."""
    from sprune.analysis import plot_heatmap

    path = Path(path)
    names = list(masks)
    plot_heatmap(iou_table(masks), names, names, title, path, colorbar_label="IOU")
    return path


def plot_sharing_histogram(masks: Mapping[str, Mask], path: str | Path,
                           title: str = "Weights used by k language pathways") -> Path:
    """Bar chart of `sharing_histogram`: % of the scope's weights kept by 0, 1, ..., L
    languages, each bar labelled with its value."""
    from sprune.analysis import _pyplot, _save_figure

    path = Path(path)
    shares = [100 * share for share in sharing_histogram(masks)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 0.7 * len(shares), 3.6))
    bars = ax.bar(range(len(shares)), shares, color="tab:blue")
    for bar, share in zip(bars, shares):
        ax.annotate(f"{share:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(shares)), [str(k) for k in range(len(shares))])
    ax.set_xlabel(f"languages keeping the weight (of {len(masks)}); 0 = residual")
    ax.set_ylabel("% of weights in scope")
    ax.set_ylim(0, max(shares + [1.0]) * 1.15)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def plot_mask_drift(rounds: Sequence[Mask] | Mapping[str, Sequence[Mask]], path: str | Path,
                    labels: Sequence[str] | None = None,
                    title: str = "Mask drift: IOU with the previous round") -> Path:
    """IOU of consecutive rounds' masks against the round number (one line per series).

    `rounds` is one list of masks (round 0, 1, ...) or series name -> list (e.g. one per
    language). `labels` names the rounds on the x axis (len = the longest series; default
    0, 1, ...); point r is IOU(round r - 1, round r), so the axis starts at round 1.
    """
    from sprune.analysis import _pyplot, _save_figure
    from sprune.report import line_styles

    path = Path(path)
    series = dict(rounds) if isinstance(rounds, Mapping) else {"mask": list(rounds)}
    longest = max((len(s) for s in series.values()), default=0)
    if longest < 2:
        raise UserError("cannot plot mask drift: it needs the masks of at least 2 rounds")
    if labels is not None and len(labels) != longest:
        raise UserError(f"cannot plot mask drift: {len(labels)} round labels for {longest} "
                        "rounds; give one label per round")
    ticks = list(labels) if labels is not None else [str(r) for r in range(longest)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 + 0.5 * longest), 3.6))
    styles = line_styles()
    for name, masks in series.items():
        drift = mask_drift(list(masks))
        ax.plot(range(1, len(drift) + 1), [100 * v for v in drift],
                label=name if len(series) > 1 else None, **next(styles))
    ax.set_xticks(range(1, longest), ticks[1:])
    ax.set_xlabel("round (each compared with the round before)")
    ax.set_ylabel("IOU with previous round (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    return path
