"""Language pathways (paper 003): export one pathway of a run, or a study's RESULTS.md.

  sprune pathways export exp/mls/dynamic_lap_s0.7 --lang fr-FR --out exp/mls/pathway_fr-FR
  sprune pathways results exp/mini_mls [--metric cer] [--test test] [--baseline imp]

`results` reads a study folder as `egs/TEMPLATE/asr1/pathways.sh` lays it out (see
`sprune.pathways_report`) and writes RESULTS.md (per-language error rate, mean ± standard
deviation over seeds, differences smaller than the spread marked "(n.s.)"), results.csv and
PNG plots (error vs sparsity, IOU between pathways, weights shared by k languages, mask
drift).

`export` writes one language's pathway as a standalone pruned run folder: the run's weights
times that language's mask (final/), the mask (mask/), experiment.json with the run's task
files, outcome.json with the language's dev metrics from the pathways run, and upstream/:
the pruned upstream as a sprune upstream dir, which `load_upstream` and the s3prl bridge
read (`S3PRLUpstream("sprune", path_or_url=OUT/upstream)`). `sprune evaluate OUT --data DIR`
evaluates it like any run. The folder appears complete or not at all.

Shrinking: a pathway's mask is unstructured (element) or 8x1 blocks inside the weight
matrices, which leaves every row and column of a matrix in use somewhere, so there is
nothing to remove physically; the exported upstream keeps the dense shapes with the pruned
weights at zero (structured pruning that does shrink is `sprune l0prune` + `sprune shrink`).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from sprune.errors import UserError
from sprune.io import atomic_dir, atomic_write_text

HELP = "language pathways: export one as a standalone pruned run; a study's RESULTS.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["export", "results"],
                        help="export: one language's pathway of a run; results: RESULTS.md "
                             "of a study folder")
    parser.add_argument("folder", help="export: a finished `pathways` run folder; results: "
                                       "the study's experiment folder")
    parser.add_argument("--lang", help="export: the language tag of the pathway")
    parser.add_argument("--out", help="export: the run folder to write")
    parser.add_argument("--metric", default="cer", help="results: error rate (default cer)")
    parser.add_argument("--test", default="test",
                        help="results: the test set's name, eval_<name>.json (default test)")
    parser.add_argument("--baseline", default="imp",
                        help="results: the method others are compared with (default imp)")
    parser.add_argument("--order", default="imp adaptive pathways dynamic_ls dynamic_lap",
                        help="results: the methods' order in the table (others follow)")
    parser.add_argument("--title", help="results: the title of RESULTS.md")


def run(args: argparse.Namespace) -> int:
    if args.action == "results":
        from sprune.pathways_report import write_report

        path = write_report(Path(args.folder), args.metric, args.test, args.title,
                            args.baseline, args.order.split())
        print(f"sprune pathways: {path}")
        return 0
    if not args.lang or not args.out:
        raise UserError("export needs --lang (the pathway's language) and --out (the run "
                        "folder to write)")
    export_pathway(Path(args.folder), args.lang, Path(args.out))
    print(f"sprune pathways: {args.lang} pathway of {args.folder} -> {args.out}")
    return 0


def export_pathway(run_dir: Path, language: str, out: Path) -> None:
    """Write `language`'s pathway of the pathways run `run_dir` as a run folder `out`."""
    import torch

    from sprune.experiment import load_experiment
    from sprune.prune.mask import Mask
    from sprune.prune.methods.base import load_model_state, save_model_state
    from sprune.prune.methods.pathways import PATHWAYS_DIR
    from sprune.upstream import save_upstream

    outcome_path = run_dir / "outcome.json"
    if not outcome_path.is_file():
        raise UserError(f"{outcome_path} is missing; the run has not finished (run `sprune "
                        "prune` for it first)")
    outcome = json.loads(outcome_path.read_text())
    if outcome.get("method") != "pathways":
        raise UserError(f"{run_dir} is a '{outcome.get('method')}' run, not a pathways run; "
                        "its mask/ is already the run's only pathway")
    languages = outcome["extra"]["languages"]
    if language not in languages:
        raise UserError(f"{run_dir} has no pathway for '{language}'; its languages: "
                        f"{', '.join(languages)}")
    experiment = load_experiment(run_dir)
    model = experiment.build_model()
    load_model_state(model, run_dir / "final")
    mask = Mask.load(run_dir / PATHWAYS_DIR / language)
    mask.check_fits(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in mask.items():
            params[name].mul_(keep.to(params[name].device))
    dev = {key.rsplit("/", 1)[0]: value for key, value in outcome["dev"].items()
           if key.endswith(f"/{language}")}
    experiment.metadata = {**experiment.metadata,
                           "pathway": {"run": str(run_dir.resolve()), "language": language}}
    with atomic_dir(out) as tmp:
        experiment.save(tmp)
        if (run_dir / "prune.json").is_file():
            shutil.copy2(run_dir / "prune.json", tmp / "prune.json")
        save_model_state(model, tmp / "final")
        mask.save(tmp / "mask")
        save_upstream(model.upstream, tmp / "upstream")
        total = sum(p.numel() for p in params.values())
        kept = sum(int(torch.count_nonzero(p)) for p in params.values())
        scope = sum(mask[n].numel() for n in mask)
        atomic_write_text(tmp / "outcome.json", json.dumps({
            "method": "pathways", "target_sparsity": outcome["target_sparsity"],
            "achieved_sparsity": mask.sparsity(), "scope_params": scope,
            "params_left": kept, "total_params": total, "passes": outcome["passes"],
            "dev": dev, "extra": {"pathway_of": str(run_dir.resolve()), "language": language}},
            indent=1) + "\n")
