"""What every pruning method shares: its config, the context it runs in, and its outcome.

A method turns a pretrained task model into a pruned, fine-tuned one. It runs one or more
fine-tuning runs of the one `Trainer` (each run in its own folder, skipped when finished and
resumed when killed) and hooks them with callbacks (`sprune.prune.methods.callbacks`).

Folder of a method run (`out_dir`):

    <run>/...           one folder per fine-tuning run (e.g. `finetune`, `level2`, `retrain`)
    mask/               the final mask (safetensors + JSON sparsity report)
    final/              the final task-model weights (sprune checkpoint state)
    outcome.json        what the results table needs (see `MethodOutcome`)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import torch
from torch import nn

from sprune.checkpoint import load_state, save_state
from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.prune.criteria import Criterion, make_criterion
from sprune.prune.mask import Mask
from sprune.prune.scope import resolve_scope
from sprune.prune.select import check_sparsity, select_mask
from sprune.prune.statistics import score_parameters
from sprune.training import Callback, TrainConfig, Trainer, distributed, resolve_device


@dataclass
class PruneConfig:
    """A `conf/prune_<method>.yaml` file. Keys a method does not use are ignored by it."""

    method: str = "parp"             # dense | rp | mpi | omp | imp | parp | parp-p | adaptive | pathways
    sparsity: float = 0.5            # target fraction of pruned weights in the scope
    criterion: str = "magnitude"     # magnitude | random | taylor | wanda (how weights are scored)
    # taylor (|w * dL/dw|) and wanda (|w| * input norm) score on this many training batches,
    # seeded and fixed, with dropout off, each time a mask is made (PARP: every re-prune)
    criterion_batches: int = 8
    distribution: Literal["global", "layer", "parameter"] = "global"
    granularity: str = "element"     # element | RxC block (e.g. 8x1) | row
    scope: str | None = "transformer"   # preset: transformer | transformer+extractor | all
    include: list[str] = field(default_factory=list)   # extra groups / parameter globs
    exclude: list[str] = field(default_factory=list)
    seed: int = 0                    # seed of random pruning
    # PARP / PARP-P (paper 001)
    reprune_every: int = 50          # updates between re-prunes
    initial_sparsity: float | None = None   # PARP-P start (default: sparsity - 0.2, >= 0)
    progressive_until: float = 0.5   # PARP-P reaches the target at this fraction of updates
    progressive_schedule: Literal["linear", "cubic"] = "linear"
    # IMP with rewinding (paper 000 defaults: k = 2 epochs, n = 5 epochs per level, p = 0.2)
    imp_fraction: float = 0.2        # p: fraction of the remaining weights pruned per level
    imp_rewind_epochs: float = 2.0   # k: rewind point, in epochs of the level-0 run
    imp_level_epochs: float = 5.0    # n: epochs trained per level after the rewind point
    imp_retrain: bool = True         # retrain the winning ticket (full schedule) at the end
    imp_ticket: Literal["best", "target"] = "best"  # best dev level, or the level at the target
    # Adaptive masks (paper 003; `sprune.prune.methods.adaptive`): rounds of `round_steps`
    # updates T; at update `adapt_at` n of a round the mask is chosen again from all weights
    # at the round's sparsity, and at the end of a round the sparsity rises to the next
    # entry of `sparsity_schedule` (default: `rounds` equal steps from `initial_sparsity`,
    # or target - 0.2, up to `sparsity`)
    round_steps: int = 100
    adapt_at: int = 50
    rounds: int = 3
    sparsity_schedule: list[float] = field(default_factory=list)
    # Pathways (paper 003; `sprune.prune.methods.pathways`): one mask per language over
    # shared weights. `pathway_masks`: language tag -> mask (language-specific start); else
    # one language-agnostic mask (LAP: `mask_from`, or the criterion on the pretrained
    # weights). `dynamic`: adapt and prune them in rounds (the adaptive keys above).
    pathway_masks: dict[str, str] = field(default_factory=dict)
    dynamic: bool = False
    # Take the mask from another run instead of computing it (cross-lingual mask transfer,
    # paper 001 Sec. 4.3): a mask dir or .safetensors file. rp / mpi / omp fine-tune that
    # subnetwork with a hard mask (no dense run needed); parp / parp-p start from it.
    mask_from: str | None = None


@dataclass
class PruneContext:
    """Everything a method needs from the task, so methods stay task-agnostic.

    build_model:  a fresh task model: pretrained upstream (theta_0) + a head initialised from
                  a fixed seed, so every call returns identical weights.
    groups:       named parameter groups over the task model's parameter names.
    train_config: the fine-tuning settings of the dense run (`train:` in the recipe config).
    make_trainer: (model, out_dir, callbacks, train_config) -> Trainer.
    evaluate:     model -> metrics on the dev set (e.g. {"accuracy": ...}).
    dense_dir:    a finished dense fine-tuning run (OMP needs its weights), or None.
    train_batches: n -> n collated training batches on the training device, in a fixed
                  seeded order that leaves the trainer's RNG and data order alone (the
                  data-driven criteria taylor and wanda score on them); None: the task has
                  none to give, and those criteria are refused.
    language_batches: (tag, n) -> like train_batches, from one language's training
                  utterances (pathways score each language on its own data); None: none.
    languages:    the training data's language tags (utt2lang), sorted; () without any.
    evaluate_language: (model, tag) -> metrics on the dev utterances of one language
                  (pathways evaluate each language with its own mask); None: not available.
    """

    build_model: Callable[[], nn.Module]
    groups: Mapping[str, Sequence[str]]
    train_config: TrainConfig
    make_trainer: Callable[[nn.Module, Path, Sequence[Callback], TrainConfig], Trainer]
    evaluate: Callable[[nn.Module], dict[str, float]]
    dense_dir: Path | None = None
    resume: bool = True
    log: Callable[[str], None] = print
    train_batches: Callable[[int], Iterable[Any]] | None = None
    language_batches: Callable[[str, int], Iterable[Any]] | None = None
    languages: Sequence[str] = ()
    evaluate_language: Callable[[nn.Module, str], dict[str, float]] | None = None


@dataclass
class MethodOutcome:
    """The result of a method run, saved as outcome.json."""

    method: str
    target_sparsity: float
    achieved_sparsity: float         # exact zeros in the scope of the final model
    scope_params: int                # weights in the scope
    params_left: int                 # non-zero weights of the whole task model
    total_params: int
    passes: float                    # fine-tuning passes over the training set, all runs
    dev: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")


# Largest difference between a given mask's sparsity (`mask_from`) and the one a method
# expects: masks selected at the same target differ by rounding only.
MASK_FROM_TOLERANCE = 0.01


class Method:
    """Base class. Subclasses set `name` and implement `run`."""

    name = "method"
    needs_dense = False
    takes_mask_from = False   # whether `mask_from` replaces the mask the method would compute

    def __init__(self, config: PruneConfig) -> None:
        self.config = config
        check_sparsity(config.sparsity)
        if config.mask_from is not None and not self.takes_mask_from:
            raise UserError(f"method '{self.name}' finds its own masks and cannot take "
                            "mask_from; use it with rp, mpi, omp (fine-tune the given "
                            "subnetwork) or parp, parp-p (start from it)")

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome | None:
        """Run the method into `out_dir`. With `retrain=False` a method that has a separate
        (re)training phase after finding its mask (RP, MPI, OMP: subnetwork fine-tuning; IMP:
        ticket retraining) stops after saving the mask and returns None; running again with
        `retrain=True` reuses everything finished."""
        raise NotImplementedError

    def check_inputs(self, model: nn.Module, ctx: PruneContext) -> None:
        """Fail now, before the run folder is written, on inputs that do not fit the model:
        the training device, the scope (preset, include, exclude) and a `mask_from` mask (its
        names and shapes vs `model`, this method's scope, the sparsity it expects). `model` is
        a fresh `ctx.build_model()` that the caller throws away. Subclasses add their own
        checks."""
        resolve_device(ctx.train_config.device)
        self.scope_names(model, ctx)
        if self.config.mask_from:
            self.given_mask(model, ctx, self.mask_from_sparsity())

    def mask_from_sparsity(self) -> float | None:
        """The sparsity a `mask_from` mask must have for this method (None: any)."""
        return self.config.sparsity

    # ---- helpers shared by the methods -----------------------------------------------------
    def scope_names(self, model: nn.Module, ctx: PruneContext) -> list[str]:
        c = self.config
        return resolve_scope(model, preset=c.scope, include=c.include, exclude=c.exclude,
                             groups=ctx.groups)

    def make_mask(self, model: nn.Module, ctx: PruneContext, sparsity: float,
                  criterion: str | None = None, previous: Mask | None = None,
                  allowed: Mask | None = None, language: str | None = None) -> Mask:
        """Score the scope of `model` with the criterion and select a mask at `sparsity`
        (among the `allowed` weights when given: the others score below every real score,
        which is >= 0 for every criterion, so they are pruned first; taylor / wanda score on
        one `language`'s training batches when given).

        taylor and wanda score on `ctx.train_batches(criterion_batches)` with the model on
        the training device (moved there first) and in eval mode; `score_parameters`
        leaves the model's gradients, modes and the RNGs as they were, so this may run in
        the middle of a training run (PARP's re-prunes)."""
        c = self.config
        name = criterion or c.criterion
        crit = build_criterion(name, c.seed)
        names = self.scope_names(model, ctx)
        batches = None
        if crit.needs_gradients or crit.needs_activations:
            if ctx.train_batches is None:
                raise UserError(f"criterion '{name}' needs training batches, which this task "
                                "does not provide; use magnitude or random")
            model.to(resolve_device(ctx.train_config.device))
            if language is not None:
                if ctx.language_batches is None:
                    raise UserError(f"criterion '{name}' needs training batches of language "
                                    f"'{language}', which this task does not provide; use "
                                    "magnitude or random")
                batches = ctx.language_batches(language, c.criterion_batches)
            else:
                batches = ctx.train_batches(c.criterion_batches)
        scores = score_parameters(crit, model, names, batches, task_loss)
        if allowed is not None:
            scores = {n: torch.where(allowed[n].to(s.device), s, -1.0) for n, s in scores.items()}
        mask = select_mask(scores, sparsity, distribution=c.distribution,
                           granularity=c.granularity, previous=previous)
        distributed.check_same_tensors(mask.values(), f"the {self.name} mask")
        return mask


    def given_mask(self, model: nn.Module, ctx: PruneContext,
                   expected_sparsity: float | None = None) -> Mask:
        """The mask of `config.mask_from`, checked against the model and the method's scope
        (and against `expected_sparsity` when given), in scope order."""
        path = self.config.mask_from
        mask = Mask.load(path)
        mask.check_fits(model)
        scope = self.scope_names(model, ctx)
        if set(mask) != set(scope):
            odd = sorted(set(mask) ^ set(scope))[0]
            where = "the mask" if odd in mask else "this method's scope"
            raise UserError(f"mask_from {path} covers {len(mask)} parameters but this method's "
                            f"scope has {len(scope)} ('{odd}' is only in {where}); use a mask "
                            "pruned with the same scope")
        mask = Mask({n: mask[n] for n in scope})
        if expected_sparsity is not None:
            self.check_given_sparsity(mask, expected_sparsity)
        return mask

    def check_given_sparsity(self, mask: Mask, expected: float) -> None:
        if abs(mask.sparsity() - expected) > MASK_FROM_TOLERANCE:
            raise UserError(f"mask_from {self.config.mask_from} has sparsity "
                            f"{mask.sparsity():.4f} but {self.name} expects {expected:.4f} "
                            "here; pass the mask's sparsity (--sparsity) or a mask pruned "
                            "at this one")


def build_criterion(name: str, seed: int = 0) -> Criterion:
    """The criterion `name` of a prune config (`seed` seeds random pruning)."""
    return make_criterion(name, **({"seed": seed} if name == "random" else {}))


def task_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """The scalar training loss of a task model: `model(batch)["loss"]`."""
    return model(batch)["loss"]


def run_training(ctx: PruneContext, model: nn.Module, out_dir: Path,
                 callbacks: Sequence[Callback] = (), config: TrainConfig | None = None,
                 initial_step: int = 0) -> dict[str, Any]:
    """One fine-tuning run in `out_dir`: skipped when it finished before (its weights are
    loaded into `model`), resumed when it was killed, else started. Returns its summary."""
    config = config or ctx.train_config
    summary_path = out_dir / "summary.json"
    trainer = ctx.make_trainer(model, out_dir, list(callbacks), config)
    if summary_path.is_file() and (out_dir / "final").is_dir():
        load_model_state(model, out_dir / "final")
        ctx.log(f"{out_dir}: finished before; reusing it")
        return json.loads(summary_path.read_text())
    summary = trainer.fit(resume=ctx.resume, initial_step=initial_step)
    save_model_state(model, out_dir / "final")
    atomic_write_text(summary_path, json.dumps(summary, indent=1) + "\n")
    return summary


def final_dev_metrics(ctx: PruneContext, model: nn.Module,
                      summary: dict[str, Any] | None = None) -> dict[str, float]:
    """Dev metrics of `model`: the trainer's evaluation after its last update when `summary`
    (of `run_training` on this model) holds one, else a new evaluation."""
    if summary and summary.get("final_metrics"):
        return dict(summary["final_metrics"])
    model.eval()
    with torch.no_grad():
        return {k: float(v) for k, v in ctx.evaluate(model).items()}


def save_model_state(model: nn.Module, path: Path) -> None:
    save_state(path, {"model": model.state_dict()})


def load_model_state(model: nn.Module, path: Path) -> None:
    state = load_state(path)["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise UserError(f"{path}: weights do not fit this model (first {'missing' if missing else 'unexpected'}"
                        f" key '{key}'); was it trained with another config?")


def finish(method: Method, ctx: PruneContext, model: nn.Module, mask: Mask, out_dir: Path,
           passes: float, extra: dict[str, Any] | None = None,
           dev: dict[str, float] | None = None) -> MethodOutcome:
    """Save the final mask and weights, write outcome.json with the dev metrics.

    dev: the final model's dev metrics when the caller has them (the trainer evaluates after
    its last update: `summary["final_metrics"]` of `run_training`), else evaluated here.
    """
    params = dict(model.named_parameters())
    scope = list(mask)
    scope_total = sum(params[n].numel() for n in scope)
    scope_zero = sum(int((params[n] == 0).sum()) for n in scope)
    total = sum(p.numel() for p in params.values())
    nonzero = sum(int(torch.count_nonzero(p)) for p in params.values())
    mask.save(out_dir / "mask", groups=ctx.groups)
    save_model_state(model, out_dir / "final")
    if not dev:
        dev = final_dev_metrics(ctx, model)
    outcome = MethodOutcome(method=method.name, target_sparsity=method.config.sparsity,
                            achieved_sparsity=scope_zero / scope_total if scope_total else 0.0,
                            scope_params=scope_total, params_left=nonzero, total_params=total,
                            passes=passes, dev=dev, extra=extra or {})
    outcome.save(out_dir / "outcome.json")
    return outcome
