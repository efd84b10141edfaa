"""Feature extraction for visualisation and t-SNE of ReID features (coloured by domain and by
identity, as M3L Fig. 5 / Fig. A; needs scikit-learn and matplotlib).

Public names are re-exported by :mod:`reid_plugins.visualization.visualizer`.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

__all__ = [
    "load_features",
    "plot_embedding",
    "save_features",
    "tsne_embed",
    "visualize_tsne",
]

# Records keep the public module's logger name (as before the visualiser was split).
logger = logging.getLogger("reid_plugins.visualization.visualizer")


# ----------------------------------------------------------------------------- features
def save_features(
    model: torch.nn.Module, loader: Iterable, path: str, *, max_batches: Optional[int] = None
) -> Dict[str, np.ndarray]:
    """Run ``model`` (eval mode, no grad) over ``loader`` batches (ReID ``list[dict]``) and
    write ``path`` (``.npz``) with ``features`` (N, D) float32, ``pids``, ``camids``,
    ``domains`` (record ``"dataset"``, else ``"domain"``, else ``"unknown"``), ``files`` and
    ``is_query``. Returns the arrays. Chain several test loaders (``itertools.chain``) to mix
    domains."""
    from ..evaluation.evaluator import inference_context

    feats, pids, cams, doms, files, isq = [], [], [], [], [], []
    with inference_context(model), torch.no_grad():
        for b, batch in enumerate(tqdm(loader, desc="extract features", leave=False)):
            if max_batches is not None and b >= max_batches:
                break
            for rec, out in zip(batch, model(batch)):
                if "feature" not in out:
                    raise KeyError(f"model output lacks 'feature' (keys: {sorted(out)})")
                feats.append(out["feature"].detach().float().cpu().reshape(-1).numpy())
                pids.append(int(rec.get("pid", -1)))
                cams.append(int(rec.get("camid", -1)))
                doms.append(str(rec.get("dataset", rec.get("domain", "unknown"))))
                files.append(str(rec.get("file_name", "")))
                isq.append(bool(rec.get("is_query", False)))
    if not feats:
        raise ValueError("save_features: the loader yielded no samples")
    arrays = {
        "features": np.stack(feats).astype(np.float32),
        "pids": np.asarray(pids, np.int64),
        "camids": np.asarray(cams, np.int64),
        "domains": np.asarray(doms),
        "files": np.asarray(files),
        "is_query": np.asarray(isq, bool),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)
    logger.info("Saved %d features (dim %d) to %s", len(feats), arrays["features"].shape[1], path)
    return arrays


def load_features(path: str) -> Dict[str, np.ndarray]:
    """Arrays of a :func:`save_features` file (``features`` required; ``pids`` / ``domains``
    default to -1 / "unknown")."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"features file '{path}' does not exist (see save_features)")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if "features" not in data or data["features"].ndim != 2:
        raise KeyError(f"'{path}' must hold a 2-D 'features' array (has {sorted(data)})")
    n = data["features"].shape[0]
    data.setdefault("pids", np.full(n, -1, np.int64))
    data.setdefault("domains", np.full(n, "unknown"))
    return data


def tsne_embed(features: np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of L2-normalised ``features``; perplexity is clipped below
    the sample count as scikit-learn requires. Exact gradients up to 300 samples (faster
    there than Barnes-Hut), Barnes-Hut above."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    if x.shape[0] < 3:
        raise ValueError(f"t-SNE needs at least 3 samples, got {x.shape[0]}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    perp = float(min(perplexity, max(1.0, (x.shape[0] - 1) / 3.0)))
    method = "exact" if x.shape[0] <= 300 else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, method=method)
    return tsne.fit_transform(x)


def plot_embedding(
    points: np.ndarray, labels: Sequence[str], path: str, *, title: str = "", legend_max: int = 20
) -> str:
    """Scatter of 2-D ``points`` coloured by ``labels`` (legend up to ``legend_max`` labels)
    written as PNG (matplotlib Agg canvas, no pyplot state)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = np.asarray([str(x) for x in labels])
    names = list(dict.fromkeys(labels.tolist()))  # first-appearance order
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    fig = Figure(figsize=(6.5, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, n in enumerate(names):
        m = labels == n
        ax.scatter(points[m, 0], points[m, 1], s=12, color=cmap(i % cmap.N), label=n, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if len(names) <= legend_max:
        ax.legend(loc="best", fontsize=8, markerscale=1.5, framealpha=0.8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def visualize_tsne(
    data: Union[str, Dict[str, np.ndarray]],
    output_dir: str,
    *,
    max_per_domain: Optional[int] = 500,
    num_ids: int = 7,
    exclude_pids: Sequence[int] = (-1, 0),
    perplexity: float = 30.0,
    seed: int = 0,
) -> List[str]:
    """``tsne_domain.png`` (all domains, at most ``max_per_domain`` random samples each,
    coloured by domain, as M3L Fig. 5) and ``tsne_identity.png`` (the ``num_ids`` identities
    with most samples, pids in ``exclude_pids`` -- junk / distractors -- left out, t-SNE of
    their samples only, coloured by identity, as M3L Fig. A)."""
    d = load_features(data) if isinstance(data, str) else data
    feats, pids, doms = d["features"], d["pids"], d["domains"].astype(str)
    rng = np.random.default_rng(seed)
    sel = []
    for dom in dict.fromkeys(doms.tolist()):
        idx = np.flatnonzero(doms == dom)
        if max_per_domain is not None and len(idx) > max_per_domain:
            idx = np.sort(rng.choice(idx, max_per_domain, replace=False))
        sel.append(idx)
    sel = np.concatenate(sel)
    pts = tsne_embed(feats[sel], perplexity=perplexity, seed=seed)
    out = [
        plot_embedding(
            pts, doms[sel], os.path.join(output_dir, "tsne_domain.png"), title="t-SNE by domain"
        )
    ]
    ident = np.char.add(np.char.add(doms, ":"), pids.astype(str))
    ok = ~np.isin(pids, np.asarray(exclude_pids, np.int64))
    names, counts = np.unique(ident[ok], return_counts=True)
    top = names[np.lexsort((names, -counts))][: int(num_ids)]  # most samples, then by name
    idx = np.flatnonzero(np.isin(ident, top) & ok)
    if len(top) >= 2 and len(idx) >= 3:
        pts = tsne_embed(feats[idx], perplexity=perplexity, seed=seed)
        path = os.path.join(output_dir, "tsne_identity.png")
        title = f"t-SNE of {len(top)} identities"
        out.append(plot_embedding(pts, ident[idx], path, title=title))
    else:
        logger.warning("t-SNE by identity skipped: fewer than 2 identities with samples")
    return out
