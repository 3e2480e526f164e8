"""Show importance scores: per-layer, per-head and per-channel tables, and a PNG plot.

Pruning decisions are only as good as the scores behind them, so ``edgekit prune --analyze`` lets a
user see them before cutting: a layer whose score stands out, or heads that all look alike.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekit.prune.importance import Scores


def summary_rows(scores: Scores) -> list[dict[str, float | int | str]]:
    """One row per layer: layer score, per-head scores, and FFN channel score quantiles."""
    rows = []
    heads = scores.heads if scores.heads is not None else scores.groups
    for i in range(len(scores.layers)):
        ffn = scores.ffn[i].float()
        rows.append(
            {
                "layer": i,
                "layer_score": float(scores.layers[i]),
                "heads": " ".join(f"{float(v):.3g}" for v in heads[i]),
                "ffn_min": float(ffn.min()),
                "ffn_median": float(ffn.median()),
                "ffn_max": float(ffn.max()),
            }
        )
    return rows


def hidden_quantiles(scores: Scores) -> dict[str, float]:
    """Spread of the hidden-channel scores (min, quartiles, max)."""
    q = torch.quantile(scores.hidden.float(), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    return dict(zip(("min", "q25", "median", "q75", "max"), (float(v) for v in q), strict=True))


def scores_dict(scores: Scores) -> dict[str, list]:
    """Every score as nested lists (JSON-able): the per-channel detail the table summarizes."""
    fields = {"layers": scores.layers, "groups": scores.groups, "heads": scores.heads}
    fields.update(ffn=scores.ffn, hidden=scores.hidden)
    return {k: v.float().tolist() for k, v in fields.items() if v is not None}


def plot_scores(scores: Scores, path: str | Path, title: str = "importance") -> Path:
    """Save a 4-panel PNG: layer scores, head scores [layer × head], sorted FFN scores per layer, hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = scores.heads if scores.heads is not None else scores.groups
    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    n_layers, n_heads = heads.shape
    ax[0, 0].bar(range(n_layers), scores.layers.float().numpy())
    # symlog: one layer (often the first) can matter orders of magnitude more than the rest
    ax[0, 0].set(title="layers (higher = keep)", xlabel="layer", yscale="symlog", xticks=range(n_layers))
    image = ax[0, 1].imshow(heads.float().numpy(), aspect="auto", cmap="viridis")
    ax[0, 1].set(title="query heads", xlabel="head", ylabel="layer", xticks=range(n_heads), yticks=range(n_layers))
    fig.colorbar(image, ax=ax[0, 1])
    for i, row in enumerate(scores.ffn.float()):
        ax[1, 0].plot(torch.sort(row, descending=True).values.numpy(), label=f"layer {i}")
    ax[1, 0].set(title="FFN channels, sorted", xlabel="rank", yscale="symlog")
    ax[1, 0].legend(fontsize=7)
    ax[1, 1].plot(torch.sort(scores.hidden.float(), descending=True).values.numpy())
    ax[1, 1].set(title="hidden channels, sorted", xlabel="rank", yscale="symlog")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
