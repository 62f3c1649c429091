"""``unhans export virelay RUN DIR``: a run as a ViRelAy project (the interactive SpRAy viewer, PyPI ``virelay``).

DIR gets ``project.yaml``, ``label-map.json`` and three HDF5 files, the layout virelay 0.6 reads:

- ``dataset.h5``: ``data`` (N, 3, H, W) uint8, the inputs as the model sees them with the input
  normalization undone (grayscale repeated on 3 channels: ViRelAy's image endpoints need 3),
  ``label`` (N,) the given labels;
- ``attribution.h5``: ``attribution`` (M, 3, H, W) float32, each explained sample's heatmap summed
  over channels and spread evenly over 3 (ViRelAy sums them back), ``prediction`` (M, classes)
  softmax of the logits, ``label`` (M,), ``index`` (M,) the sample ids (quarantined samples are
  left out, so the index is needed);
- ``analysis.h5``: one group per class that has samples, named like its label map ``word_net_id``
  (``class_<k>``), with ``index`` (the class's sample ids), ``embedding/spectral`` (the spectral
  embedding without its trivial eigenvector, the eigenvalues as attribute ``eigenvalue``),
  ``embedding/umap`` (when every class has a UMAP map), and ``cluster/spray_k<k>`` for every k the
  eigengap search tried plus ``cluster/spray_chosen`` (the audit's clusters). Every class carries
  the same names (ViRelAy takes the lists from the first class); values are finite (a NaN breaks
  its JSON); the analysis method is ``spectral_analysis`` (a ``-`` in that name breaks its URLs).

Large runs are written in blocks of :data:`BLOCK` samples. h5py is needed (``pip install "unhans[virelay]"``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BLOCK = 4096
ANALYSIS_METHOD = "spectral_analysis"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError('unhans export virelay needs h5py: pip install "unhans[virelay]" (or pip install h5py)') from None
    return h5py


def category(class_id: int) -> str:
    return f"class_{int(class_id)}"


def export_virelay(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the ViRelAy project of a finished run into ``out_dir``; returns the project YAML's path."""
    import yaml
    from scipy.special import softmax

    from unhans.storage import RunLayout, open_run, read_table

    from .config import from_dict
    from .report.page import display_image
    from .sample_planes import SamplePlanes
    from .sources import SampleImages
    from .stages.context import AuditContext

    h5py = _h5py()
    run_dir, out = Path(run_dir), Path(out_dir)
    layout = RunLayout(run_dir)
    if not layout.summary.exists():
        raise FileNotFoundError(f"{run_dir}: no summary.json (export a finished audit run)")
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(layout.manifest.read_text())
    summary = json.loads(layout.summary.read_text())
    config = from_dict(manifest["config"])
    ctx = AuditContext(config=config, layout=layout, markers=None, quiet=True)
    images = SamplePlanes(SampleImages(ctx.source()))  # a time series as its features x time plane
    spec = ctx.input_spec()
    names = list(summary["dataset"].get("class_names") or [])
    samples = read_table(run_dir, "samples", columns=["sample_id", "label", "status"]).sort_by("sample_id")
    labels = samples.column("label").to_numpy()
    ok = np.flatnonzero(samples.column("status").to_numpy(zero_copy_only=False) == "ok")
    outputs = read_table(run_dir, "outputs", columns=["sample_id", "logits"]).sort_by("sample_id")
    logits = np.stack(outputs.column("logits").to_numpy(zero_copy_only=False))
    num_classes = logits.shape[1]
    n = len(labels)
    relevance = open_run(run_dir).relevance()

    label_map = [{"index": k, "word_net_id": category(k), "name": names[k] if k < len(names) else str(k)}
                 for k in range(num_classes)]
    (out / "label-map.json").write_text(json.dumps(label_map, indent=2))

    with h5py.File(out / "dataset.h5", "w") as f:
        shape = images.shape[1:]
        data = f.create_dataset("data", (n, 3, *shape[1:]), dtype=np.uint8, chunks=(1, 3, *shape[1:]))
        for start in range(0, n, BLOCK):
            stop = min(start + BLOCK, n)
            block = np.stack([display_image(x, spec.transform.mean, spec.transform.std) for x in images[start:stop]])
            if block.shape[1] == 1:
                block = np.repeat(block, 3, axis=1)
            data[start:stop] = np.round(block[:, :3] * 255).astype(np.uint8)
        f["label"] = labels.astype(np.int64)

    with h5py.File(out / "attribution.h5", "w") as f:
        spatial = images.shape[2:]
        attribution = f.create_dataset("attribution", (len(ok), 3, *spatial), dtype=np.float32,
                                       chunks=(1, 3, *spatial))
        for start in range(0, len(ok), BLOCK):
            ids = ok[start:start + BLOCK]
            maps = relevance.take(ids)
            maps = maps[:, None] if images.series else maps.sum(1, keepdims=True)
            maps = maps / 3.0
            attribution[start:start + len(ids)] = np.repeat(maps, 3, axis=1).astype(np.float32)
        f["prediction"] = softmax(logits[ok], axis=1).astype(np.float32)
        f["label"] = labels[ok].astype(np.int64)
        f["index"] = ok.astype(np.uint32)

    _write_analysis(h5py, run_dir, out / "analysis.h5", manifest)

    method = config.explain.method + (f" {config.explain.composite}" if config.explain.method == "lrp" else "")
    model = summary.get("model", {})
    project = {"project": {
        "name": f"unhans {run_dir.resolve().name}",
        "model": str(model.get("name") or model.get("factory") or model.get("checkpoint") or "model"),
        "label_map": "label-map.json",
        "dataset": {"name": str(summary["dataset"].get("name") or "dataset"), "type": "hdf5", "path": "dataset.h5",
                    "input_width": int(images.shape[-1]), "input_height": int(images.shape[-2]),
                    "up_sampling_method": "none", "down_sampling_method": "none"},
        "attributions": {"attribution_method": method,
                         "attribution_strategy": "true_label" if config.explain.target == "label" else "predicted_label",
                         "sources": ["attribution.h5"]},
        "analyses": [{"analysis_method": ANALYSIS_METHOD, "sources": ["analysis.h5"]}],
    }}
    path = out / "project.yaml"
    path.write_text(yaml.safe_dump(project, sort_keys=False))
    return path


def _write_analysis(h5py, run_dir: Path, path: Path, manifest: dict) -> None:
    from unhans.storage import read_table
    from unhans.storage.class_embeddings import read_class_embedding

    spray = read_table(run_dir, "spray", columns=["sample_id", "class_id", "cluster"]).sort_by("sample_id")
    class_of, cluster = spray.column("class_id").to_numpy(), spray.column("cluster").to_numpy()
    max_clusters = int(manifest["config"]["spray"]["max_clusters"])
    classes = [int(k) for k in np.unique(class_of) if k >= 0]
    found = {k: read_class_embedding(run_dir, k) for k in classes}
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise FileNotFoundError(f"{run_dir}: no SpRAy embeddings for class(es) {missing[:5]} (spray_embeddings/; "
                                "runs made before unhans stored them: rerun the spray stage)")
    with_umap = all(np.isfinite(v["umap"]).all() for v in found.values())
    dims = max_clusters  # spectral columns after the trivial one
    with h5py.File(path, "w") as f:
        for k, emb in found.items():
            ids = emb["sample_id"]
            group = f.create_group(category(k))
            group["index"] = ids.astype(np.uint32)
            spectral = np.zeros((len(ids), dims), np.float32)
            if emb["spectral"].shape[1] > 1:
                cols = emb["spectral"][:, 1:1 + dims]
                spectral[:, :cols.shape[1]] = np.nan_to_num(cols)
            eigen = np.zeros(dims, np.float32)
            values = np.asarray(emb["eigenvalues"], np.float64)[1:1 + dims]
            eigen[:len(values)] = np.nan_to_num(values)
            data = group.create_dataset("embedding/spectral", data=spectral)
            data.attrs["eigenvalue"] = eigen
            if with_umap:
                umap = group.create_dataset("embedding/umap", data=np.asarray(emb["umap"], np.float32))
                umap.attrs["embedding"] = "spectral"
            chosen = cluster[np.searchsorted(spray.column("sample_id").to_numpy(), ids)]
            group.create_dataset("cluster/spray_chosen", data=chosen.astype(np.int64))
            for j in range(2, max_clusters + 1):
                labels = emb.get(f"k{j}", chosen)  # a class too small for k clusters keeps its chosen ones
                data = group.create_dataset(f"cluster/spray_k{j:02d}", data=np.asarray(labels, np.int64))
                data.attrs["k"] = j
                data.attrs["embedding"] = "spectral"
