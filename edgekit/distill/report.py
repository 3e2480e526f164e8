"""The run's monitor as a picture: training loss and held-out KL / top-1 against the step.

A falling loss with a flat or rising held-out KL is the first sign of a student memorising the
training rows instead of learning the teacher; one plot shows both.
"""

from __future__ import annotations

from pathlib import Path


def plot_monitor(history: list[dict], path: str | Path) -> Path | None:
    """Write a PNG of ``history`` (trainer entries); None when matplotlib is missing or nothing to plot."""
    if not history:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    evals = [e for e in history if "kl" in e]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(10 if evals else 5, 3.5), squeeze=False)
    ax = axes[0][0]
    ax.plot([e["step"] for e in history], [e["loss"] for e in history])
    ax.set(xlabel="step", ylabel="training loss", title="loss")
    if evals:
        ax = axes[0][1]
        steps = [e["step"] for e in evals]
        ax.plot(steps, [e["kl"] for e in evals], marker="o", label="KL(teacher‖student)")
        ax.plot(steps, [e["kl_rare"] for e in evals], marker=".", label="KL, rare tokens")
        ax.set(xlabel="step", ylabel="nats/token", title="held-out")
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
