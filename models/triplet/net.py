"""Embedding networks: an MLP for vectors, a small CNN for images. Both end in an L2 normalisation,
so embeddings lie on the unit sphere and distances between them lie in [0, 2]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, embedding_dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)                                       # (B, D) -> (B, E)


class SmallCNN(nn.Module):
    """Three conv blocks (width w, 2w, 4w; w = max(4, hidden_dim // 4)), global average pooling,
    then a hidden layer of ``hidden_dim``."""

    def __init__(self, channels: int, hidden_dim: int, embedding_dim: int):
        super().__init__()
        w = max(4, hidden_dim // 4)

        def block(c_in: int, c_out: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(channels, w), block(w, 2 * w), block(2 * w, 4 * w))
        self.head = nn.Sequential(nn.Linear(4 * w, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)                                      # (B, C, S, S) -> (B, 4w, S/8, S/8)
        h = h.mean(dim=(2, 3))                                    # (B, 4w)
        return self.head(h)                                       # (B, E)


class EmbeddingNet(nn.Module):
    """``forward(x) -> (embedding, raw_norm)``: the unit-length embedding and the norm of the raw
    output before normalisation (a diagnostic: a raw output shrinking to 0 makes directions noise)."""

    def __init__(self, input_shape: tuple[int, ...], hidden_dim: int, embedding_dim: int):
        super().__init__()
        if len(input_shape) == 1:
            self.backbone: nn.Module = MLP(input_shape[0], hidden_dim, embedding_dim)
        else:
            self.backbone = SmallCNN(input_shape[0], hidden_dim, embedding_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.backbone(x)                                    # (B, E)
        norm = raw.norm(dim=1)                                    # (B,)
        return F.normalize(raw, dim=1), norm                      # (B, E) unit rows, (B,)
