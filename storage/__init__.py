"""The run store: manifest, heatmaps in Zarr v3, per-sample tables in Parquet, markers."""
from .class_maps import ClassMaps, class_maps_parts_done, remove_class_maps, write_class_maps_part
from .cluster_means import ClusterMeans, write_class_means
from .concept_maps import read_concept_maps, write_concept_maps
from .heatmaps import create_heatmap_array, normalize_for_storage, open_heatmap_array
from .layout import RunLayout
from .markers import Markers
from .relevance import Relevance
from .run_store import Run, RunMismatchError, init_run, open_run, prepare_run_dir, update_manifest
from .tables import iter_table_batches, matrix_column, read_table, table_columns, write_part, write_table

__all__ = [
    "ClassMaps", "class_maps_parts_done", "remove_class_maps", "write_class_maps_part",
    "ClusterMeans", "Markers", "read_concept_maps", "write_concept_maps", "Relevance", "Run", "RunLayout", "RunMismatchError", "create_heatmap_array", "init_run", "normalize_for_storage",
    "iter_table_batches", "matrix_column", "open_heatmap_array", "open_run", "prepare_run_dir", "read_table", "table_columns", "update_manifest", "write_class_means", "write_part", "write_table",
]
