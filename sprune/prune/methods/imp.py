"""IMP: iterative magnitude pruning with rewinding (Frankle et al. 2019; paper 000).

    level 0: train theta_0 for k + n epochs, saving theta_k after k epochs
    level i: prune fraction p of the weights still left (by magnitude of the weights that
             level i-1 ended with; what was pruned stays pruned), rewind the survivors to
             theta_k, train from update k for n epochs with the mask fixed
    until the target sparsity is reached (its last level prunes exactly to the target).
    ticket:  the pruned level with the best dev score (`imp_ticket: best`, paper 000) or the
             level that reached the target (`imp_ticket: target`); retrain it from theta_k
             with the full fine-tuning schedule of the dense run (`imp_retrain`).

With `imp_ticket: target` and `imp_retrain` the last level is pruned but not trained: its
n epochs would only give a dev score that picks nothing, and retraining the ticket runs the
same updates from theta_k again (levels.json gives it "dev": null, "trained": false).

The config's `criterion` (default magnitude) scores the level's weights; taylor and wanda
score them on `criterion_batches` training batches.
Paper 000 uses k = 2 epochs, n = 5 epochs, p = 0.2 (the defaults); paper 001 uses p = 0.1
and rewinds to theta_0 (`imp_rewind_epochs: 0`). Each level is its own run folder
(`level{i}/`) with its mask and dev score, so a killed IMP resumes at the level it was in.
The learning-rate schedule of a level continues from update k of a (k + n)-epoch schedule.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn

from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.prune.mask import Mask
from sprune.prune.methods.base import (Method, MethodOutcome, PruneContext, finish,
                                       final_dev_metrics, load_model_state, run_training)
from sprune.prune.methods.callbacks import HardMaskCallback, SnapshotCallback
from sprune.prune.schedule import imp_schedule


class IterativeMagnitudePruning(Method):
    name = "imp"

    def levels(self) -> list[float]:
        """Sparsity of levels 1..L (level 0 is dense)."""
        c = self.config
        if not 0.0 < c.imp_fraction < 1.0:
            raise UserError(f"imp_fraction must be in (0, 1), got {c.imp_fraction}")
        return imp_schedule(c.sparsity, c.imp_fraction)

    def check_inputs(self, model: nn.Module, ctx: PruneContext) -> None:
        self.levels()
        super().check_inputs(model, ctx)

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome | None:
        c = self.config
        train = ctx.train_config
        probe = ctx.make_trainer(ctx.build_model(), out_dir / "level0", [], train)
        steps_per_epoch, dense_steps = probe.steps_per_epoch, probe.max_steps
        del probe
        k = round(c.imp_rewind_epochs * steps_per_epoch)
        n = max(1, round(c.imp_level_epochs * steps_per_epoch))
        level_config = dataclasses.replace(train, max_steps=k + n)

        model = ctx.build_model()
        level0 = out_dir / "level0"
        summary = run_training(ctx, model, level0, [SnapshotCallback(k)], level_config)
        passes = summary["passes"]
        rewind = level0 / "checkpoint" / "rewind"
        if not rewind.is_dir():
            raise UserError(f"{rewind} is missing; delete {out_dir} and run IMP again")
        history = [{"level": 0, "sparsity": 0.0, "dev": final_dev_metrics(ctx, model, summary)}]
        mask: Mask | None = None
        levels = self.levels()
        skip_last = c.imp_ticket == "target" and c.imp_retrain
        for level, sparsity in enumerate(levels, start=1):
            mask = self.make_mask(model, ctx, sparsity, previous=mask)   # from level-1 weights
            level_dir = out_dir / f"level{level}"
            mask.save(level_dir / "mask", groups=ctx.groups)
            if skip_last and level == len(levels):
                history.append({"level": level, "sparsity": mask.sparsity(), "dev": None,
                                "trained": False})
                ctx.log(f"IMP level {level}: sparsity {mask.sparsity():.3f} (the ticket: "
                        "retrained below, not trained as a level)")
                break
            model = ctx.build_model()
            load_model_state(model, rewind)
            summary = run_training(ctx, model, level_dir, [HardMaskCallback(mask)],
                                   level_config, initial_step=k)
            passes += summary["passes"]
            history.append({"level": level, "sparsity": mask.sparsity(),
                            "dev": final_dev_metrics(ctx, model, summary)})
            ctx.log(f"IMP level {level}: sparsity {mask.sparsity():.3f} dev {history[-1]['dev']}")
        atomic_write_text(out_dir / "levels.json", json.dumps(history, indent=1) + "\n")

        ticket_level = self.pick_ticket(history, train.metric, train.metric_mode)
        ticket_mask = Mask.load(out_dir / f"level{ticket_level}" / "mask")
        if not retrain and c.imp_retrain:
            ticket_mask.save(out_dir / "mask", groups=ctx.groups)
            return None
        if not c.imp_retrain:
            load_model_state(model, out_dir / f"level{ticket_level}" / "final")
            return finish(self, ctx, model, ticket_mask, out_dir, passes,
                          extra={"levels": history, "ticket_level": ticket_level},
                          dev=history[ticket_level]["dev"])
        model = ctx.build_model()
        load_model_state(model, rewind)
        retrain_config = dataclasses.replace(train, max_steps=max(k + 1, dense_steps))
        summary = run_training(ctx, model, out_dir / "retrain", [HardMaskCallback(ticket_mask)],
                               retrain_config, initial_step=k)
        passes += summary["passes"]
        return finish(self, ctx, model, ticket_mask, out_dir, passes,
                      extra={"levels": history, "ticket_level": ticket_level,
                             "rewind_step": k, "level_updates": n},
                      dev=summary.get("final_metrics"))

    def pick_ticket(self, history: list[dict], metric: str, mode: str) -> int:
        pruned = history[1:]
        if self.config.imp_ticket == "target" or not pruned:
            return history[-1]["level"]
        if metric not in pruned[0]["dev"]:
            raise UserError(f"train.metric '{metric}' is not among the dev metrics "
                            f"({', '.join(pruned[0]['dev'])}); fix train.metric in the config")
        sign = 1 if mode == "max" else -1
        # ties go to the sparser level
        best = max(pruned, key=lambda h: (sign * h["dev"][metric], h["level"]))
        return best["level"]
