"""Turn scores into a mask: prune the lowest-scored units until a sparsity is reached.

Rules (the README documents them):

* **Count.** A pool of n weights at sparsity s prunes round(s * n) weights, the convention of
  `torch.nn.utils.prune` (and immune to 0.29 * 100 = 28.999...). With blocks or rows (units of
  several weights) the lowest-scored units are pruned, in order, while the number of pruned
  weights stays <= round(s * n): exact for single weights and for equal units that divide the
  budget, otherwise up to one unit short of it.
* **Ties** are broken by position: among equal scores, the unit that comes first (parameters in
  the order of the scores mapping, then row-major inside a parameter) is pruned first. So the
  result never depends on the sort algorithm or the number of threads.
* **Units.** A weight of shape [out, in] is cut into blocks of R rows x C columns (`8x1`: 8
  output units x 1 input column, paper 003); a `row` is one output unit (all its inputs).
  Tensors of other ranks are viewed as [shape[0], rest] (1-D as [n, 1]). Edge blocks that do
  not fill R x C keep their smaller size. A unit's score is the **mean** of its weights'
  scores (mean rather than L2 so partial edge blocks compete fairly with full ones).
* **Pools.** `global`: one pool over all scored parameters (one threshold); `layer`: one pool
  per `layers.{i}` prefix (parameters outside numbered layers each form their own pool);
  `parameter`: one pool per parameter. Every pool gets the same sparsity.
* **Monotone masks (IMP).** With `previous`, units whose weights were all pruned before are
  pruned first and count toward the target; weights pruned before stay pruned.

The global threshold over ~85 M weights is found without sorting them: estimate the k-th
smallest score from a random sample, count the scores below a bracket around the estimate in
one pass, and select exactly among the few scores inside it (`kth_smallest`). The answer is
verified and falls back to an exact `kthvalue`, so it is always the exact k-th value.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sprune.errors import UserError
from sprune.prune.mask import Mask, layer_of

DISTRIBUTIONS = ("global", "layer", "parameter")

# Below this many scores, an exact kthvalue is as fast as anything else.
_EXACT_BELOW = 1 << 20
# Sample size and bracket half-width (in standard deviations of the sample quantile).
_SAMPLE_SIZE = 1 << 17
_BRACKET_SIGMAS = 6.0
# Elements per chunk of the CPU counting pass (1 MiB of float32).
_CHUNK = 1 << 18


def check_sparsity(sparsity: float) -> float:
    """Return `sparsity` as a float, or raise a UserError unless it lies in [0, 1)."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise UserError(f"sparsity '{sparsity}' is not a number; give a fraction in [0, 1) "
                        "such as 0.7") from None
    if isinstance(sparsity, bool) or not 0.0 <= value < 1.0:
        raise UserError(f"sparsity {sparsity} is outside [0, 1); give the fraction of weights "
                        "to prune, such as 0.7 for 70 %")
    return value


@dataclass(frozen=True)
class Granularity:
    """Pruning unit: `rows` x `cols` weights; `cols=None` means a whole row (output unit)."""

    rows: int = 1
    cols: int | None = 1

    @classmethod
    def parse(cls, spec: "str | Granularity") -> "Granularity":
        """`element`, `row` or `RxC` (also `blockRxC`), e.g. `8x1`."""
        if isinstance(spec, Granularity):
            return spec
        text = str(spec).strip().lower()
        if text == "element":
            return cls(1, 1)
        if text == "row":
            return cls(1, None)
        match = re.fullmatch(r"(?:block)?(\d+)x(\d+)", text)
        if match and int(match.group(1)) > 0 and int(match.group(2)) > 0:
            return cls(int(match.group(1)), int(match.group(2)))
        raise UserError(f"unknown pruning granularity '{spec}'; use element, row or a block "
                        "size RxC such as 8x1")

    @property
    def is_element(self) -> bool:
        return self.rows == 1 and self.cols == 1

    def __str__(self) -> str:
        if self.is_element:
            return "element"
        return "row" if self.cols is None else f"{self.rows}x{self.cols}"


# -- exact k-th smallest value over many tensors ---------------------------------------------

@dataclass
class Threshold:
    """The k-th smallest score over a list of tensors (k counts from 1).

    `below`: how many scores are strictly smaller; `equal[i]`: how many scores of tensor i
    equal `value`. The k - below first equal scores (in tensor order) are the ones pruned.
    """

    value: torch.Tensor
    below: int
    equal: list[int]


def _flat(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.reshape(-1) for t in tensors]


def kth_smallest_exact(tensors: Sequence[torch.Tensor], k: int) -> Threshold:
    """Reference: concatenate everything and call `torch.kthvalue` (slow on ~1e8 scores)."""
    flats = _flat(tensors)
    joined = torch.cat(flats)
    value = joined.kthvalue(k).values
    below = int(torch.count_nonzero(joined < value))
    return Threshold(value, below, [int(torch.count_nonzero(f == value)) for f in flats])


def _bracket(flats: list[torch.Tensor], n: int, k: int, sample_size: int, sigmas: float,
             seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (lo, hi) that very probably enclose the k-th smallest, from a stratified sample."""
    generator = torch.Generator(device=flats[0].device).manual_seed(seed)
    picks = []
    for flat in flats:
        count = round(sample_size * flat.numel() / n)
        if count:
            index = torch.randint(flat.numel(), (count,), generator=generator,
                                  device=flat.device)
            picks.append(flat[index])
    if not picks:  # only when there are far more tensors than samples
        picks.append(max(flats, key=torch.numel)[:1])
    sample = torch.sort(torch.cat(picks)).values
    m = sample.numel()
    q = k / n
    half = sigmas * math.sqrt(m * q * (1 - q)) + 2
    lo_index, hi_index = math.floor(q * m - half), math.ceil(q * m + half)
    finfo = torch.finfo(sample.dtype)
    lo = sample[lo_index] if lo_index >= 0 else sample.new_tensor(finfo.min)
    hi = sample[hi_index] if hi_index < m else sample.new_tensor(finfo.max)
    # An infinite bound would make all scores equal to it (e.g. -inf for weights pruned
    # before) candidates; finite bounds count them below (or above) the bracket instead.
    return lo.clamp(finfo.min, finfo.max), hi.clamp(finfo.min, finfo.max)


def kth_smallest(tensors: Sequence[torch.Tensor], k: int, *, seed: int = 0) -> Threshold:
    """The exact k-th smallest score over `tensors`, in a few memory passes.

    1. A stratified random sample of ~131k scores gives a bracket [lo, hi] that contains the
       k-th smallest score with overwhelming probability.
    2. One pass per tensor counts the scores < lo and gathers the few scores in [lo, hi].
    3. `kthvalue` on the gathered scores gives the exact answer. If the bracket missed (the
       count says so), retry with a wider bracket, then fall back to `kth_smallest_exact`.
    """
    flats = _flat(tensors)
    n = sum(f.numel() for f in flats)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} is outside [1, {n}]")
    if n <= _EXACT_BELOW:
        return kth_smallest_exact(flats, k)
    sample_size, sigmas = _SAMPLE_SIZE, _BRACKET_SIGMAS
    for attempt in range(2):
        lo, hi = _bracket(flats, n, k, sample_size, sigmas, seed + attempt)
        below, candidates = _count_below_and_gather(flats, lo, hi)
        gathered = sum(c.numel() for c in candidates)
        if below < k <= below + gathered:
            joined = torch.cat(candidates)
            value = joined.kthvalue(k - below).values
            below += int(torch.count_nonzero(joined < value))
            return Threshold(value, below, [int(torch.count_nonzero(c == value))
                                            for c in candidates])
        sample_size, sigmas = sample_size * 4, sigmas * 4
    return kth_smallest_exact(flats, k)


def _on_cpu(tensors: Sequence[torch.Tensor]) -> bool:
    """CPU tensors NumPy can view without a copy (NumPy's boolean ops are several times
    faster than torch's on CPU: a torch masked_select alone costs ~10 read passes)."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
               and not t.requires_grad for t in tensors)


def _count_below_and_gather(flats: list[torch.Tensor], lo: torch.Tensor, hi: torch.Tensor
                            ) -> tuple[int, list[torch.Tensor]]:
    """Count scores < lo and gather the scores in [lo, hi], one pass per tensor."""
    below, candidates = 0, []
    if _on_cpu(flats):
        # Chunks small enough to stay in cache: the compare, count and gather that follow the
        # first read of a chunk then hit the cache instead of memory.
        is_below_buffer, inside_buffer = np.empty(_CHUNK, dtype=bool), np.empty(_CHUNK, bool)
        for flat in flats:
            array = flat.numpy()
            low, high = array.dtype.type(lo.item()), array.dtype.type(hi.item())
            pieces = []
            for start in range(0, array.size, _CHUNK):
                chunk = array[start:start + _CHUNK]
                is_below = np.less(chunk, low, out=is_below_buffer[:chunk.size])
                below += int(np.count_nonzero(is_below))
                inside = np.less_equal(chunk, high, out=inside_buffer[:chunk.size])
                np.logical_xor(inside, is_below, out=inside)  # below implies <= hi
                pieces.append(chunk[inside])
            candidates.append(torch.from_numpy(np.concatenate(pieces)))
        return below, candidates
    for flat in flats:
        is_below = flat < lo
        below += int(torch.count_nonzero(is_below))
        candidates.append(flat[(flat <= hi) ^ is_below])
    return below, candidates


def keep_below_threshold(tensors: Sequence[torch.Tensor], threshold: Threshold, k: int
                         ) -> list[torch.Tensor]:
    """Bool keep-masks (tensor shapes) pruning exactly the k lowest scores, ties by position."""
    if _on_cpu(tensors):
        value = threshold.value.item()
        arrays = [np.greater(t.numpy(), t.numpy().dtype.type(value)) for t in tensors]
        kept = sum(int(np.count_nonzero(a)) for a in arrays)
        keeps = [torch.from_numpy(a) for a in arrays]
    else:
        keeps = [t > threshold.value for t in tensors]
        kept = sum(int(torch.count_nonzero(k)) for k in keeps)
    # NaN is neither below, equal to nor above the threshold: it shows up as a missing count.
    if kept + threshold.below + sum(threshold.equal) != sum(t.numel() for t in tensors):
        raise ValueError("scores contain NaN")
    restore = sum(threshold.equal) - (k - threshold.below)  # tied scores that stay kept
    for i in reversed(range(len(tensors))):
        if restore == 0:
            break
        equal = threshold.equal[i]
        if equal == 0:
            continue
        is_equal = tensors[i] == threshold.value
        if equal <= restore:
            keeps[i] |= is_equal
            restore -= equal
        else:
            last = is_equal.reshape(-1).nonzero().squeeze(1)[-restore:]
            keeps[i].view(-1)[last] = True
            restore = 0
    return keeps


def prune_lowest(scores: Sequence[torch.Tensor], k: int, *, fast: bool = True
                 ) -> list[torch.Tensor]:
    """Keep-masks pruning exactly the `k` lowest of `scores` (ties: earlier position first)."""
    if k <= 0:
        return [torch.ones(s.shape, dtype=torch.bool, device=s.device) for s in scores]
    threshold = kth_smallest(scores, k) if fast else kth_smallest_exact(scores, k)
    return keep_below_threshold(scores, threshold, k)


# -- units: blocks and rows --------------------------------------------------------------------

def _as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dim() == 0:
        return tensor.reshape(1, 1)
    if tensor.dim() == 1:
        return tensor.reshape(-1, 1)
    return tensor.reshape(tensor.shape[0], -1)


def _block_shape(matrix: torch.Tensor, unit: Granularity) -> tuple[int, int]:
    cols = matrix.shape[1] if unit.cols is None else unit.cols
    return unit.rows, max(cols, 1)


def unit_scores(score: torch.Tensor, unit: Granularity) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean score and weight count of each unit: two [ceil(out/R), ceil(rest/C)] tensors."""
    matrix = _as_matrix(score).float()
    rows, cols = _block_shape(matrix, unit)
    height, width = matrix.shape
    n_rows, n_cols = -(-height // rows), -(-width // cols)
    padded = F.pad(matrix, (0, n_cols * cols - width, 0, n_rows * rows - height))
    sums = padded.reshape(n_rows, rows, n_cols, cols).sum(dim=(1, 3))
    rows_per_unit = torch.full((n_rows,), rows, dtype=torch.float32, device=matrix.device)
    rows_per_unit[-1] = height - (n_rows - 1) * rows
    cols_per_unit = torch.full((n_cols,), cols, dtype=torch.float32, device=matrix.device)
    cols_per_unit[-1] = width - (n_cols - 1) * cols
    sizes = torch.outer(rows_per_unit, cols_per_unit)
    return sums / sizes, sizes


def expand_units(unit_keep: torch.Tensor, shape: torch.Size, unit: Granularity
                 ) -> torch.Tensor:
    """Spread a [units_r, units_c] keep mask back onto weights of `shape`."""
    template = _as_matrix(torch.empty(shape, device="meta"))
    rows, cols = _block_shape(template, unit)
    height, width = template.shape
    full = unit_keep.repeat_interleave(rows, dim=0)[:height].repeat_interleave(cols, dim=1)
    return full[:, :width].reshape(shape)


def _units_all_pruned(previous: torch.Tensor, unit: Granularity) -> torch.Tensor:
    pruned_fraction, _ = unit_scores((~previous).float(), unit)
    return pruned_fraction >= 1.0


def _prune_units_by_size(unit_score: list[torch.Tensor], sizes: list[torch.Tensor],
                         budget: int) -> list[torch.Tensor]:
    """Prune the lowest units in (score, position) order while the weights pruned <= budget."""
    flat_scores = torch.cat([s.reshape(-1) for s in unit_score])
    flat_sizes = torch.cat([s.reshape(-1) for s in sizes]).double()
    order = torch.sort(flat_scores, stable=True).indices
    pruned_weights = torch.cumsum(flat_sizes[order], dim=0)
    count = int(torch.searchsorted(pruned_weights, torch.tensor(
        [float(budget)], dtype=torch.float64, device=pruned_weights.device), right=True))
    keep = torch.ones(flat_scores.numel(), dtype=torch.bool, device=flat_scores.device)
    keep[order[:count]] = False
    return list(torch.split(keep, [s.numel() for s in unit_score]))


def _common_size(sizes: list[torch.Tensor]) -> int | None:
    """The weight count shared by all units, or None when units differ in size."""
    distinct = torch.unique(torch.cat([s.reshape(-1) for s in sizes]))
    return int(distinct[0]) if distinct.numel() == 1 else None


def _select_pool(scores: list[torch.Tensor], sparsity: float, unit: Granularity,
                 previous: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """Keep-masks for one pool of parameters at `sparsity`."""
    budget = round(sparsity * sum(s.numel() for s in scores))
    if unit.is_element:
        units, sizes = [s if s.dtype == torch.float32 else s.float() for s in scores], None
    else:
        pairs = [unit_scores(s, unit) for s in scores]
        units, sizes = [p[0] for p in pairs], [p[1] for p in pairs]
    if sizes is not None and any(bool(torch.isnan(u).any()) for u in units):
        raise ValueError("scores contain NaN")
    forced = [None if prev is None else
              (~prev if unit.is_element else _units_all_pruned(prev, unit)) for prev in previous]
    if any(f is not None for f in forced):
        units = [u if f is None else u.masked_fill(f.to(u.device), -math.inf)
                 for u, f in zip(units, forced)]
    size = 1 if sizes is None else _common_size(sizes)
    if size is not None:
        k = budget // size
        n_forced = sum(int(f.count_nonzero()) for f in forced if f is not None)
        if 0 < n_forced and k <= n_forced:  # target already reached: keep the old mask
            unit_keeps = [torch.ones(u.shape, dtype=torch.bool, device=u.device) for u in units]
        else:
            unit_keeps = prune_lowest(units, k)
    else:
        unit_keeps = [k.reshape(u.shape) for k, u in zip(_prune_units_by_size(units, sizes,
                                                                                 budget), units)]
    keeps = []
    for keep, score, prev in zip(unit_keeps, scores, previous):
        if not unit.is_element:
            keep = expand_units(keep, score.shape, unit)
        keep = keep.reshape(score.shape)
        keeps.append(keep if prev is None else keep & prev.to(keep.device))
    return keeps


def _pools(names: list[str], distribution: str,
           layer_key: Callable[[str], str | None]) -> list[list[str]]:
    if distribution == "global":
        return [names]
    if distribution == "parameter":
        return [[n] for n in names]
    pools: dict[str, list[str]] = {}
    for name in names:
        pools.setdefault(layer_key(name) or name, []).append(name)
    return list(pools.values())


def select_mask(scores: Mapping[str, torch.Tensor], sparsity: float, *,
                distribution: str = "global", granularity: "str | Granularity" = "element",
                previous: Mask | None = None,
                layer_key: Callable[[str], str | None] = layer_of) -> Mask:
    """Mask pruning the lowest-scored units of `scores` (name -> score tensor) at `sparsity`.

    See the module docstring for the counting, tie and unit rules. `previous` (a mask over
    some of the same parameters) makes the result monotone: what it pruned stays pruned.
    """
    sparsity = check_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise UserError(f"unknown sparsity distribution '{distribution}'; known: "
                        f"{', '.join(DISTRIBUTIONS)}")
    unit = Granularity.parse(granularity)
    names = list(scores)
    if previous is not None:
        for name in names:
            if name in previous and previous[name].shape != scores[name].shape:
                raise UserError(f"previous mask does not fit: parameter '{name}' has shape "
                                f"{list(previous[name].shape)} in the mask and "
                                f"{list(scores[name].shape)} in the model")
    keeps: dict[str, torch.Tensor] = {}
    for pool in _pools(names, distribution, layer_key):
        pool_scores = [scores[n].detach() for n in pool]
        pool_previous = [previous[n] if previous is not None and n in previous else None
                         for n in pool]
        try:
            keeps.update(zip(pool, _select_pool(pool_scores, sparsity, unit, pool_previous)))
        except ValueError as error:
            if "NaN" not in str(error):
                raise
            bad = next(n for n, s in zip(pool, pool_scores) if bool(torch.isnan(s).any()))
            raise UserError(f"pruning scores of parameter '{bad}' contain NaN: the model's "
                            "weights or gradients are not finite (did training diverge?); "
                            "prune a finite checkpoint") from None
    return Mask({n: keeps[n] for n in names})
