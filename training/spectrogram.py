"""Training spectrogram (thesis Figure 6.1): per epoch, the predicted-similarity histogram,
the target histogram and the MAE per similarity bin, for training and validation pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from training.train import EpochRecord


def _column(counts: Sequence[int]) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


def plot_spectrogram(history: Sequence[EpochRecord], path: str | Path) -> Path:
    path = Path(path)
    epochs = [r.epoch for r in history]
    bins = len(history[0].validation.bin_mae)
    rows = (
        ("predicted similarity (share of pairs)", lambda m: _column(m.prediction_hist), "viridis"),
        ("target similarity (share of pairs)", lambda m: _column(m.target_hist), "viridis"),
        ("MAE per target bin", lambda m: np.asarray(m.bin_mae, dtype=np.float64), "magma"),
    )
    fig, axes = plt.subplots(3, 2, figsize=(11, 10), sharex=True, constrained_layout=True)
    for col, (title, getter) in enumerate((("training (bin-balanced)", lambda r: r.train),
                                           ("validation (natural)", lambda r: r.validation))):
        for row, (label, values, cmap) in enumerate(rows):
            grid = np.stack([values(getter(r)) for r in history], axis=1)
            ax = axes[row, col]
            image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=cmap,
                              extent=(min(epochs) - 0.5, max(epochs) + 0.5, 0, 1))
            fig.colorbar(image, ax=ax)
            ax.set_ylabel("similarity")
            ax.set_title(f"{title}: {label}", fontsize=9)
            if row == 2:
                ax.set_xlabel("epoch")
    fig.suptitle(f"Training spectrogram ({bins} similarity bins)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
