"""Toy data, a small float network and retraining settings for the methods' unit tests."""

import torch

from qdesign.nn.data import Splits
from qdesign.nn.models import build_model

FC = {"type": "fcdnn", "depth": 2}


CFG = {"optimizer": "adam", "lr": 5e-3, "weight_decay": 0.0, "schedule": "cosine", "epochs": 2, "batch_size": 32}


def toy_data(n=256, seed=0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, :3].argmax(dim=1)).long()
    return Splits(x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :], x[n // 2 :], y[n // 2 :], 3)


def float_model(seed=0, width=16):
    torch.manual_seed(seed)
    return build_model(FC, width, (1, 4, 4), 3)
