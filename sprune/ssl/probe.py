"""Frozen-upstream linear probes: how much intent information each layer holds.

The upstream runs once over every utterance (no gradients, eval mode); each hidden state is
mean-pooled over the valid frames, giving one [L + 1, D] matrix per utterance. For every
layer, a multinomial logistic regression (full batch, L-BFGS, L2 penalty chosen on dev from a
small grid) is trained on the standardised train features. The layer with the best dev
accuracy is the "best layer"; the last layer is reported too. Comparing a pretrained upstream
with the same architecture at a seeded random initialisation shows what pretraining bought.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from sprune.data.dataset import AudioDataset, collate_audio
from sprune.tasks.intent import masked_mean
from sprune.upstream import UpstreamConfig, UpstreamModel

DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


@torch.no_grad()
def pooled_layer_features(upstream: nn.Module, dataset: AudioDataset, batch_size: int = 8
                          ) -> Tensor:
    """Mean-pooled hidden states of every utterance: -> [N, L + 1, D] (dataset order).

    Utterances are batched by length (from the audio headers), so batches hold little padding.
    """
    was_training = upstream.training
    upstream.eval()
    device = next(upstream.parameters()).device
    batches = dataset.length_sorted_batches(batch_size)
    pooled: list[Tensor | None] = [None] * len(dataset)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_audio)
    for indices, batch in zip(batches, loader):
        out = upstream(batch["wavs"].to(device), batch["lengths"].to(device))
        layers = torch.stack([masked_mean(h, out.lengths) for h in out.hidden_states], dim=1)
        for row, index in enumerate(indices):
            pooled[index] = layers[row].float().cpu()
    upstream.train(was_training)
    return torch.stack(pooled)  # type: ignore[arg-type]


def random_init_like(config: UpstreamConfig, seed: int) -> UpstreamModel:
    """The architecture of `config` with fresh weights drawn from `seed` (eval mode)."""
    torch.manual_seed(seed)
    return UpstreamModel(config).eval()


def fit_logistic_regression(x: Tensor, y: Tensor, num_classes: int, l2: float,
                            max_iter: int = 200) -> nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS from zero weights.

    x: [N, D] (standardised), y: [N] int64 -> a Linear(D, num_classes) classifier.
    Minimises mean cross-entropy + l2 / 2 * ||W||^2 (the bias is not penalised).
    """
    model = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter,
                                  tolerance_grad=1e-6, tolerance_change=1e-9,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + 0.5 * l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return model


def accuracy(model: nn.Linear, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


@dataclass
class LayerResult:
    layer: int
    l2: float
    train: float
    dev: float
    test: float | None


@dataclass
class ProbeResult:
    """Per-layer accuracies of one upstream; `best` is picked by dev accuracy."""

    layers: list[LayerResult] = field(default_factory=list)

    @property
    def best(self) -> LayerResult:
        return max(self.layers, key=lambda r: (r.dev, -r.layer))

    @property
    def last(self) -> LayerResult:
        return self.layers[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [vars(r) for r in self.layers], "best_layer": vars(self.best),
                "last_layer": vars(self.last)}


def probe_layers(train: tuple[Tensor, Tensor], dev: tuple[Tensor, Tensor],
                 test: tuple[Tensor, Tensor] | None, num_classes: int,
                 l2_grid: Sequence[float] = DEFAULT_L2_GRID, max_iter: int = 200) -> ProbeResult:
    """Probe every layer. Features [N, L + 1, D] and labels [N] for each split."""
    (x_train, y_train), (x_dev, y_dev) = train, dev
    result = ProbeResult()
    for layer in range(x_train.shape[1]):
        mean = x_train[:, layer].mean(0)
        std = x_train[:, layer].std(0).clamp(min=1e-6)

        def norm(x: Tensor, layer: int = layer) -> Tensor:
            return (x[:, layer] - mean) / std

        best: tuple[float, float, nn.Linear] | None = None
        for l2 in l2_grid:
            model = fit_logistic_regression(norm(x_train), y_train, num_classes, l2, max_iter)
            dev_acc = accuracy(model, norm(x_dev), y_dev)
            if best is None or dev_acc > best[0]:
                best = (dev_acc, l2, model)
        assert best is not None
        dev_acc, l2, model = best
        result.layers.append(LayerResult(
            layer=layer, l2=l2, train=accuracy(model, norm(x_train), y_train), dev=dev_acc,
            test=accuracy(model, norm(test[0]), test[1]) if test is not None else None))
    return result


def intent_labels(dataset: AudioDataset) -> Tensor:
    """Intent index of every utterance: [N] int64 (the dataset's intent vocabulary)."""
    assert dataset.intent_index is not None and dataset.data.utt2intent is not None
    return torch.tensor([dataset.intent_index[dataset.data.utt2intent[u]] for u in dataset.utts])


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one summary row per probed upstream, then accuracy by layer (dev / test)."""
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    lines = ["| upstream | init | params | best layer | dev acc | test acc | last layer "
             "dev acc | last layer test acc |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        best, last = row["best_layer"], row["last_layer"]
        lines.append(f"| {row['upstream']} | {row['init']} | {row['num_parameters']:,} | "
                     f"{best['layer']} | {pct(best['dev'])} | {pct(best['test'])} | "
                     f"{pct(last['dev'])} | {pct(last['test'])} |")
    lines += ["", "Accuracy (%) by layer, dev / test (layer 0 = transformer input):", "",
              "| layer | " + " | ".join(row["init"] for row in rows) + " |",
              "|---:|" + "---:|" * len(rows)]
    for layer in range(max(len(row["layers"]) for row in rows)):
        cells = []
        for row in rows:
            r = row["layers"][layer] if layer < len(row["layers"]) else None
            cells.append("-" if r is None else f"{pct(r['dev'])} / {pct(r['test'])}")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    chance = rows[0].get("chance")
    if chance is not None:
        lines += ["", f"Chance: {pct(chance)} % ({rows[0]['num_classes']} intents, the most "
                  "frequent training intent). L2 penalty of each layer's probe chosen on dev "
                  f"from {', '.join(f'{v:g}' for v in rows[0]['l2_grid'])}."]
    return "\n".join(lines) + "\n"
