"""The flags stage's latent evidence: each flagged group's concept in the model's latent profile.

The input-space search finds a group that shares one pattern pixel for pixel; the concept
(:mod:`unhans.spray.latent_concepts`) adds the samples that carry the same shortcut at another
size or look, and conditional heatmaps through the concept's channels show where it sits.
"""
from __future__ import annotations

import numpy as np

from .context import AuditContext

CONCEPT_MAPS = 10  # suspects per flagged class whose conditional heatmap through the latent concept is drawn


def latent_concepts(ctx: AuditContext, flagged, ok: np.ndarray, artifact_suspect: np.ndarray,
                     artifact_score: np.ndarray) -> dict[int, dict]:
    """Each flagged group's concept in the latent profile (:mod:`unhans.spray.latent_concepts`): its
    carriers join the artifact suspects and its scores the artifact scores (in place). Returns
    class → the concept's numbers (with ``carriers_added``: suspects the input-space search missed)."""
    from unhans.spray import concept_artifact_scores, concept_carriers, find_concept
    from unhans.storage import matrix_column, read_table, table_columns

    root = ctx.layout.root
    if not flagged or "latent" not in table_columns(root, "outputs"):
        return {}
    latent = matrix_column(read_table(root, "outputs", columns=["sample_id", "latent"]).sort_by("sample_id")
                           .column("latent"))
    target = read_table(root, "samples", columns=["sample_id", "target"]).sort_by("sample_id").column("target").to_numpy()
    out = {}
    for e in flagged:
        concept = find_concept(latent, np.asarray(e.members, np.int64), np.flatnonzero(ok & (target != e.class_id)),
                               np.flatnonzero(ok & (target == e.class_id)))
        if concept is None:
            out[e.class_id] = {"distinct": False, "channels": [], "carriers_added": 0}
            continue
        carriers = concept_carriers(latent, concept, target == e.class_id) & ok
        added = int((carriers & ~artifact_suspect).sum())
        artifact_suspect |= carriers
        np.maximum(artifact_score, e.score * concept_artifact_scores(latent, concept) * ok, out=artifact_score)
        out[e.class_id] = {**concept.to_dict(), "carriers_added": added, "layer": ctx.config.explain.latent_layer}
        if concept.distinct:
            shown = np.flatnonzero(artifact_suspect & (target == e.class_id))
            shown = shown[np.argsort(-artifact_score[shown], kind="stable")][:CONCEPT_MAPS]
            out[e.class_id].update(_concept_maps(ctx, e.class_id, concept, latent.shape[1] // 2, shown))
    return out


def _concept_maps(ctx: AuditContext, class_id: int, concept, num_channels: int, sample_ids: np.ndarray) -> dict:
    """Conditional heatmaps (:meth:`unhans.explainers.LRP.explain_conditional`) of ``sample_ids`` for the class,
    through the latent layer's channels the concept reads (its max or mean of channel c: c), written to
    ``RUN/concept_maps/<class>.npz``. Returns {"maps": "written" or why not, "layer": the layer's path}."""
    import torch

    from unhans.storage import RunLayout, write_concept_maps

    from ..activation_probe import latent_layer_path
    from ..devices import resolve_device
    from ..model_loading import build_model
    from ..sample_planes import SamplePlanes
    from ..sources import SampleImages
    from .explain import build_explainer

    RunLayout(ctx.layout.root).concept_maps(class_id).unlink(missing_ok=True)  # an earlier run's, if any
    explain = ctx.config.explain
    device = resolve_device(explain.device)
    model = build_model(ctx.model_spec(), device)
    layer = latent_layer_path(model, explain.latent_layer)
    if explain.method != "lrp" or explain.tsr:
        return {"maps": f"not drawn: conditional heatmaps need method lrp without tsr (this run: {explain.method})",
                "layer": layer}
    if not len(sample_ids):
        return {"maps": "not drawn: no suspects in the class", "layer": layer}
    explainer = build_explainer(model, explain)
    if not hasattr(explainer, "explain_conditional"):
        return {"maps": f"not drawn: the {type(explainer).__name__} explainer has no conditional heatmaps", "layer": layer}
    channels = sorted({int(j) % num_channels for j in concept.channels})
    planes = SamplePlanes(SampleImages(ctx.source()))
    x = torch.from_numpy(planes.model_input(planes[np.sort(sample_ids)])).to(device)
    target = torch.full((len(x),), int(class_id), dtype=torch.long, device=device)
    relevance = explainer.explain_conditional(x, layer, channels, target).relevance
    maps = relevance.detach().float().cpu().numpy().reshape(len(x), *planes.shape[1:]).sum(1)
    write_concept_maps(ctx.layout.root, class_id, np.sort(sample_ids), maps, channels)
    return {"maps": "written", "layer": layer}
