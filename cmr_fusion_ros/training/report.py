"""Training curves as a PNG (loss and validation recall@1 per epoch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(history: list[dict[str, Any]], png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(epochs, [h["loss"] for h in history], marker="o")
    a1.set_xlabel("epoch")
    a1.set_ylabel("InfoNCE loss (mean of pairs)")
    a1.grid(alpha=0.3)
    pairs = list(history[0]["val_recall@1"]) if history and history[0]["val_recall@1"] else []
    for p in pairs:
        a2.plot(epochs, [h["val_recall@1"][p] for h in history], marker=".", label=p)
    a2.set_ylim(0, 1)
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation recall@1")
    a2.grid(alpha=0.3)
    if pairs:
        a2.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(str(png), dpi=110)
    plt.close(fig)
