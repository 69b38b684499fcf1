"""Additive-Margin Softmax (Wang et al., 2018), the intent loss of paper 000.

With L2-normalised embeddings x and class weights w_j, the target logit is s * (cos t_y - m)
and every other logit is s * cos t_j; the loss is the cross-entropy of those logits:

    L = -log( e^{s(cos t_y - m)} / (e^{s(cos t_y - m)} + sum_{j != y} e^{s cos t_j}) )

The paper's defaults for face verification are s = 30, m = 0.35; the intent task keeps them
configurable (`scale`, `margin`). At inference the margin is not applied: the class is
argmax_j cos t_j.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AMSoftmax(nn.Module):
    """Cosine classifier with an additive margin on the target class.

    forward(embeddings [B, E], labels [B] | None) -> (loss scalar | None, cosines [B, C])
    """

    def __init__(self, embed_dim: int, num_classes: int, scale: float = 30.0,
                 margin: float = 0.35) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, dim=-1) @ F.normalize(self.weight, dim=-1).t()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
        cos = self.cosines(embeddings)
        if labels is None:
            return None, cos
        # the margin on each row's target class; a scatter, not F.one_hot, which checks
        # CPU labels by reading their min and max (a CUDA one_hot skips the check): so
        # the step reads no value on any device and bench/train_step.py counts none
        margin = torch.zeros_like(cos).scatter_(1, labels.unsqueeze(1), self.margin)
        loss = F.cross_entropy(self.scale * (cos - margin), labels)
        return loss, cos
