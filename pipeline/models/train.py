"""A small, really trained model without downloads: a ResNet on scikit-learn's digits.

``digits_data()`` gives the packaged 8x8 digits (1797 samples) upsampled to 32x32 as
float32 tensors; ``digits_resnet()`` trains a tiny torchvision-style ResNet on them in
well under a minute on one CPU core and caches the checkpoint (``$SPLITSTREAM_CACHE``
or ``~/.cache/splitstream/``), so later calls just load it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DIGITS_SIZE = 32
DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.25
CHECKPOINT_NAME = "digits_resnet_v1.pt"


def cache_path(path: str | os.PathLike | None = None) -> Path:
    """The checkpoint cache: ``path`` if given, else ``$SPLITSTREAM_CACHE``, else ``~/.cache/splitstream``."""
    if path is None:
        path = os.environ.get("SPLITSTREAM_CACHE") or Path.home() / ".cache" / "splitstream"
    p = Path(path).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def digits_data(
    size: int = DIGITS_SIZE, seed: int = DIGITS_SEED
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(x_train, y_train, x_test, y_test)``.

    Images are float32 ``(N, 1, size, size)`` scaled to [0, 1] (bilinear upsampling from
    8x8); labels are int64. The split is stratified with a fixed seed (75 % / 25 %).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype("float32") / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(digits.target.astype("int64"))
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=digits.target
    )
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    return x[tr_t].contiguous(), y[tr_t], x[te_t].contiguous(), y[te_t]


class BasicBlock(nn.Module):
    """torchvision-style residual block: two 3x3 convs with BN, ReLU, optional downsample."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DigitsResNet(nn.Module):
    """A small ResNet for 1x32x32 inputs: stem, three stages (16/32/64 ch), pooling, fc."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy (0..1) of ``model`` on ``(x, y)``, evaluated in batches."""
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / max(1, len(y))


def train_digits_resnet(
    epochs: int = 8, seed: int = DIGITS_SEED, batch_size: int = 64, progress: bool = True
) -> tuple[DigitsResNet, float]:
    """Train a fresh ``DigitsResNet`` (AdamW, one-cycle LR, light shift augmentation).

    Returns the model in eval mode and its test accuracy (0..1).
    """
    from tqdm import tqdm

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    g = torch.Generator().manual_seed(seed)
    x_tr, y_tr, x_te, y_te = digits_data(seed=seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = DigitsResNet()
    steps = epochs * ((len(y_tr) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    bar = tqdm(total=steps, desc="train digits-resnet", disable=not progress, leave=False)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y_tr), generator=g)
        for i in range(0, len(perm), batch_size):
            b = perm[i : i + batch_size]
            xb = x_tr[b]
            # random shifts of up to 2 pixels: cheap augmentation against overfitting
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y_tr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model, accuracy(model, x_te, y_te)


def digits_resnet(
    cache_dir: str | os.PathLike | None = None,
    epochs: int = 8,
    retrain: bool = False,
    verbose: bool = True,
) -> DigitsResNet:
    """The trained digits ResNet in eval mode, loaded from the cache or trained and cached.

    ``cache_dir`` overrides ``$SPLITSTREAM_CACHE`` /
    ``~/.cache/splitstream``. The test accuracy is stored on the model as
    ``model.test_accuracy`` (0..1) and printed when ``verbose``.
    """
    directory = cache_path(cache_dir)
    path = directory / CHECKPOINT_NAME
    # a file lock: parallel processes (e.g. Ray head and tail actors) train only once
    with open(directory / (CHECKPOINT_NAME + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists() and not retrain:
            model = DigitsResNet()
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(ckpt["state_dict"])
            acc = float(ckpt["test_accuracy"])
            model.eval()
        else:
            t0 = time.perf_counter()
            model, acc = train_digits_resnet(epochs=epochs, progress=verbose)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(
                {"state_dict": model.state_dict(), "test_accuracy": acc, "epochs": epochs}, tmp
            )
            os.replace(tmp, path)
            if verbose:
                print(f"trained digits-resnet in {time.perf_counter() - t0:.1f}s -> {path}")
    model.test_accuracy = acc  # type: ignore[attr-defined]
    if verbose:
        print(f"digits-resnet test accuracy: {100 * acc:.2f}%")
    return model


def main() -> None:
    """``python -m pipeline.models.train``: train (or load) the digits ResNet and print its accuracy."""
    import argparse

    ap = argparse.ArgumentParser(description="Train/cache the digits ResNet")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    digits_resnet(args.cache_dir, epochs=args.epochs, retrain=args.retrain)


if __name__ == "__main__":
    main()
