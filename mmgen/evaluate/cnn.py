"""Downstream accuracy of a small CNN trained on synthetic images (DPImageBench-style protocol).

Protocol (the real data is never used to select anything):

1. the labelled synthetic records are shuffled with a public seed and split
   into a training part and a *synthetic* validation part (``val_fraction``);
2. a small CNN (two 3×3 convolutions with max-pooling, global-average-pooled
   to 4×4, one hidden layer) is trained with Adam for at most ``max_epochs``
   epochs; after every epoch its accuracy on the synthetic validation part is
   measured, the best epoch's weights are kept and training stops after
   ``patience`` epochs without improvement (early stopping);
3. the selected network is scored *once* on the real test split.

Steps 1–2 are :func:`train_cnn`, which takes only synthetic data; step 3 is
:func:`cnn_accuracy`. Cf. Gong et al., "DPImageBench: A Unified Benchmark for
Differentially Private Image Synthesis" (2025), whose CNN accuracy is
selected on a validation set that is *not* the test set.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from ..errors import DataError

__all__ = ["SmallCNN", "CNNSelection", "train_cnn", "cnn_accuracy"]


class SmallCNN(nn.Module):
    """conv(3×3, 32) → ReLU → maxpool 2 → conv(3×3, 64) → ReLU → avgpool to 4×4 → 128 → ReLU → dropout → C.

    Args:
        in_channels: C of the input images (N, C, H, W); H, W ≥ 2.
        n_classes: number of output logits.
    """

    def __init__(self, in_channels: int, n_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclasses.dataclass
class CNNSelection:
    """A CNN selected on synthetic validation data, with the record of the selection.

    Attributes:
        model: the network at the selected epoch (eval mode).
        best_epoch: the selected epoch (1-based).
        val_accuracy: its accuracy on the synthetic validation split.
        val_curve: synthetic validation accuracy after every epoch run.
        epochs_run: epochs trained before early stopping.
    """

    model: SmallCNN
    best_epoch: int
    val_accuracy: float
    val_curve: list[float]
    epochs_run: int


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / max(len(x), 1)


def _check_images(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise DataError(f"The CNN needs {what} images of shape (N, C, H, W). Got {tuple(x.shape)}.")
    if y.shape != (len(x),):
        raise DataError(f"{what} labels must have shape ({len(x)},). Got {tuple(y.shape)}.")


def train_cnn(
    x_syn: torch.Tensor,
    y_syn: torch.Tensor,
    *,
    n_classes: int,
    max_epochs: int = 20,
    patience: int = 3,
    val_fraction: float = 0.1,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> CNNSelection:
    """Trains :class:`SmallCNN` on synthetic data, selecting the epoch on a synthetic validation split.

    Only synthetic data enters this function: there is no argument through
    which real data could influence the selection.

    Args:
        x_syn ((N, C, H, W) Tensor), y_syn ((N,) Tensor): labelled synthetic records.
        n_classes: number of classes (public).
        max_epochs: at most this many epochs.
        patience: stop after this many epochs without a better validation accuracy.
        val_fraction: share of the (shuffled) synthetic records held out for validation.
        batch_size, lr: Adam mini-batch size and learning rate.
        seed: seeds the shuffle, the initialisation and the mini-batch order.

    Returns:
        A :class:`CNNSelection`.

    Raises:
        DataError: on malformed inputs or too few records to split.
    """
    _check_images(x_syn, y_syn, "synthetic")
    if not 0 < val_fraction < 1:
        raise DataError(f"`val_fraction` must be in (0, 1). Got {val_fraction!r}.")
    n_val = max(1, int(round(len(x_syn) * val_fraction)))
    if len(x_syn) - n_val < 2:
        raise DataError(f"Too few synthetic records ({len(x_syn)}) to train and validate a CNN.")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x_syn), generator=gen)  # shuffled: the validation split is not class-sorted
    x_syn, y_syn = x_syn[perm].float(), y_syn[perm].long()
    x_val, y_val, x_tr, y_tr = x_syn[:n_val], y_syn[:n_val], x_syn[n_val:], y_syn[n_val:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initialisation and dropout
        model = SmallCNN(x_syn.shape[1], n_classes)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        best, best_epoch, best_state, curve, stale = -1.0, 0, None, [], 0
        for epoch in range(1, max_epochs + 1):
            model.train()
            order = torch.randperm(len(x_tr), generator=gen)
            for i in range(0, len(x_tr), batch_size):
                idx = order[i : i + batch_size]
                loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            acc = _accuracy(model, x_val, y_val)
            curve.append(acc)
            if acc > best:
                best, best_epoch, stale = acc, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return CNNSelection(model=model, best_epoch=best_epoch, val_accuracy=best, val_curve=curve, epochs_run=len(curve))


def cnn_accuracy(
    x_syn: torch.Tensor,
    y_syn: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    n_classes: int | None = None,
    seed: int = 0,
    **train_options,
) -> dict:
    """Accuracy on the real test split of a CNN trained and selected on synthetic data only.

    Args:
        x_syn ((N, C, H, W) Tensor), y_syn ((N,) Tensor): the synthetic training data.
        x_test ((M, C, H, W) Tensor), y_test ((M,) Tensor): the real test split, used once for scoring.
        n_classes: number of classes (default: one more than the largest label seen).
        seed: seed of the split, the initialisation and the batch order.
        **train_options: options of :func:`train_cnn` (``max_epochs``, ``patience``, ...).

    Returns:
        ``{"cnn": test accuracy, "cnn_selection": {"best_epoch", "val_accuracy", "epochs_run", "val_curve"},
        "seconds": s}``.
    """
    _check_images(x_test, y_test, "test")
    if x_syn.shape[1:] != x_test.shape[1:]:
        raise DataError(f"synthetic records have shape {tuple(x_syn.shape[1:])}, test records {tuple(x_test.shape[1:])}.")
    if n_classes is None:
        n_classes = int(max(int(y_syn.max()), int(y_test.max()))) + 1
    t0 = time.perf_counter()
    sel = train_cnn(x_syn, y_syn, n_classes=n_classes, seed=seed, **train_options)
    acc = _accuracy(sel.model, x_test.float(), y_test.long())  # the one and only use of the real data
    return {
        "cnn": acc,
        "cnn_selection": {"best_epoch": sel.best_epoch, "val_accuracy": sel.val_accuracy, "epochs_run": sel.epochs_run,
                          "val_curve": [round(v, 4) for v in sel.val_curve]},  # fmt: skip
        "seconds": round(time.perf_counter() - t0, 2),
    }
