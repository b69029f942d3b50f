"""Clean cuts through shape metadata: a third-party forward that reads the batch size first and
flattens by it after the cut still splits, the tail recomputing that integer from the feature;
values that are real tensors, or other shapes of the input, are still refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import split_model
from pipeline.models.fx_split import split_module


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)) + x


class ThirdParty(nn.Module):
    """Written the way much third-party code is: batch size first, blocks in a ModuleList,
    flattened by the batch size at the end."""

    def __init__(self, read: str = "size") -> None:
        super().__init__()
        self.read = read
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Block(8) for _ in range(3)])
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        if self.read == "size":
            n = x.size(0)
        elif self.read == "shape":
            n = x.shape[0]
        else:
            n, _, _, _ = x.size()
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.pool(x)
        x = x.view(n, -1)
        return self.fc(x)


@pytest.mark.parametrize("read", ["size", "shape", "unpack"])
@pytest.mark.parametrize("split", ["stem", "blocks.1", "pool"])
def test_a_forward_that_reads_the_batch_size_splits_cleanly(read, split):
    torch.manual_seed(0)
    model = ThirdParty(read).eval()
    head, tail = split_model(model, split)
    for n in (1, 3, 5):  # the tail recomputes n from the feature: it is not baked in
        x = torch.randn(n, 3, 8, 8)
        with torch.no_grad():
            assert torch.allclose(tail(head(x)), model(x), atol=1e-6)
    assert isinstance(head(torch.randn(2, 3, 8, 8)), torch.Tensor)  # one tensor crosses


class UsesHeight(nn.Module):
    """Reads a spatial size of the input after the cut: not the batch size, so not recomputable."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        h = x.size(2)
        y = self.b(self.a(x))
        return y[..., : h // 2]


class Skip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        n = x.size(0)
        return (self.b(self.a(x)) + x).view(n, -1)


def test_tensors_and_other_shapes_still_refuse_the_cut():
    with pytest.raises(ValueError, match="not a clean cut.*'size'"):
        split_module(UsesHeight(), "a")
    with pytest.raises(ValueError, match="not a clean cut.*'x'"):  # the input itself crosses
        split_module(Skip(), "a")
