"""The PyTorch network of the fraud example (the CLASS of MODEL fraud_torch)."""

from __future__ import annotations

import torch
from torch import nn


class FraudNet(nn.Module):
    """Transaction features -> probability of fraud.

    The features are standardised inside the network (``mean`` and ``scale``
    are buffers, saved in the state dict), so the model file is all a scorer
    needs. Layers: standardise, Linear, ReLU, Linear, Sigmoid.
    """

    def __init__(self, features: int = 4, hidden: int = 16):
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.scale
        return torch.sigmoid(self.out(torch.relu(self.hidden(x))))
