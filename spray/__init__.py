"""Spectral relevance analysis (SpRAy), relevance pooling, Clever-Hans evidence, training dynamics,
mislabel evidence from a model alone (:mod:`.label_quality`)."""
from .analysis import GroupAnalysis, analyze_group
from .clever_hans import (
    ClusterEvidence, class_evidence, flag_classes, pattern_carriers, rank_classes, relevance_shares, sample_artifact_scores,
    sample_window_share,
)
from .counterfactual import Confirmation, confirm_candidate, confirm_recurring, confirm_region
from .embedding_map import umap_map
from .graph import KnnGraph, knn_graph
from .latent_concepts import LatentConcept, concept_artifact_scores, concept_carriers, find_concept
from .label_quality import LabelQuality, label_quality_from_blocks, label_quality_from_model
from .pooling import pool_by_group, region_relevance
from .preprocessing import normalize_features, pool_heatmaps
from .recurring_patterns import recurring_distances, recurring_evidence, recurring_scores, recurring_screen
from .relevance_regions import region_evidence
from .verdict import ClassVerdict, decide, plan_checks, ranking

__all__ = [
    "ClusterEvidence", "Confirmation", "LatentConcept", "concept_artifact_scores", "concept_carriers", "find_concept", "GroupAnalysis", "LabelQuality", "label_quality_from_blocks", "label_quality_from_model", "confirm_candidate", "confirm_recurring", "confirm_region", "ClassVerdict", "decide", "plan_checks", "ranking", "region_evidence", "KnnGraph", "analyze_group", "class_evidence", "flag_classes", "knn_graph",
    "normalize_features", "pattern_carriers", "pool_by_group", "pool_heatmaps", "rank_classes", "recurring_distances", "recurring_evidence", "recurring_screen",
    "recurring_scores", "region_relevance", "relevance_shares",
    "sample_artifact_scores", "sample_window_share", "umap_map",
]
