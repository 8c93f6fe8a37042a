"""Evaluation report: Markdown + HTML with PNG plots (matplotlib, headless)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_expansion(expansion: pd.DataFrame, path: Path) -> Path:
    """Stacked opt-in + lookalike volume per segment, sorted by opt-in volume, % increase on top."""
    plt = _plt()
    frame = expansion.sort_values("opt_in", ascending=False)
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(frame)), 5))
    x = np.arange(len(frame))
    ax.bar(x, frame["opt_in"], label="opt-in", color="#1f77b4")
    ax.bar(x, frame["lookalike"], bottom=frame["opt_in"], label="lookalike", color="#ff7f0e")
    for xi, (total, pct) in enumerate(zip(frame["opt_in"] + frame["lookalike"], frame["increase_pct"], strict=True)):
        if np.isfinite(pct):
            ax.text(xi, total, f"+{pct:.0f}%", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, frame["segment"], rotation=90, fontsize=6)
    ax.set_ylabel("customers")
    ax.set_title("Volume expansion per segment (opt-in + lookalike)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_distribution(expansion: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    frame = expansion.sort_values("opt_in_share", ascending=False)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.22 * len(frame)), 6), sharex=True)
    x = np.arange(len(frame))
    axes[0].bar(x, 100 * frame["opt_in_share"], color="#1f77b4")
    axes[0].set_ylabel("% of opt-in")
    axes[0].set_title("Segment distribution: opt-in (top) vs lookalike (bottom)")
    axes[1].bar(x, 100 * frame["lookalike_share"], color="#ff7f0e")
    axes[1].set_ylabel("% of lookalike")
    axes[1].set_xticks(x, frame["segment"], rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_f1(per_segment: pd.DataFrame, path: Path, title: str) -> Path:
    """Per-segment F1 sorted descending, bar colour = support (thesis Fig. 6.2)."""
    plt = _plt()
    frame = per_segment.sort_values("f1", ascending=False)
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(frame)), 5))
    support = frame["support"].to_numpy(dtype=float)
    norm = plt.Normalize(vmin=support.min() if len(support) else 0, vmax=max(support.max() if len(support) else 1, 1))
    colours = plt.cm.viridis(norm(support))
    x = np.arange(len(frame))
    ax.bar(x, frame["f1"], color=colours)
    ax.scatter(x, frame["prior_f1"], marker="_", color="red", s=40, label="prior F1 (label-free)")
    ax.set_xticks(x, frame["segment"], rotation=90, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.legend(loc="upper right")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
    fig.colorbar(mappable, ax=ax, label="support (test customers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusions(confusions: dict[str, np.ndarray], path: Path) -> Path:
    plt = _plt()
    n = max(len(confusions), 1)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (segment, matrix) in zip(axes.ravel(), confusions.items(), strict=False):
        ax.axis("on")
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center")
        ax.set_xticks([0, 1], ["pred no", "pred yes"])
        ax.set_yticks([0, 1], ["true no", "true yes"])
        ax.set_title(segment, fontsize=8)
    fig.suptitle("Confusion matrices, largest segments (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_methods(summary: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(summary))
    ax.bar(x - 0.2, summary["micro_f1"], width=0.4, label="micro F1")
    ax.bar(x + 0.2, summary["macro_f1"], width=0.4, label="macro F1")
    ax.set_xticks(x, summary["method"], rotation=20, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("Two-tower pipeline vs baselines (test split)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table_md(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out_dir: Path, sections: list[tuple[str, str, list[pd.DataFrame], list[str]]],
                 title: str, warnings: list[str] | None = None) -> tuple[Path, Path]:
    """``sections``: (heading, paragraph, tables, png file names). Writes report.md/.html;
    ``warnings`` are shown in a box above everything else."""
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for warning in warnings or []:
        md += [f"> **{warning}**", ""]
        body.append(f'<p style="background:#fdd;border:2px solid #c00;padding:8px"><b>{html.escape(warning)}</b></p>')
    for heading, text, tables, images in sections:
        md += [f"## {heading}", "", text, ""]
        body += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(text)}</p>"]
        for image in images:
            md += [f"![{heading}]({image})", ""]
            body.append(f'<img src="{html.escape(image)}" alt="{html.escape(heading)}" style="max-width:100%">')
        for table in tables:
            md += [_table_md(table), ""]
            body.append(table.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text("\n".join(md) + "\n")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:2px 8px;border-bottom:1px solid #ddd}")
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                         f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return md_path, html_path
