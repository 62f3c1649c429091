"""``RUN/report.html``: one self-contained page a person reads to judge the audit.

Every user-controlled string (paths, class names, keys, config values) is HTML-escaped; every
picture is embedded, so the file opens offline and can be mailed around. Everything comes from
the run store and the user's source: thumbnails are decoded from the input again (nothing of
the dataset is copied into the run directory) and shown as the model saw them, normalization
undone. It stays readable and small at 1000 classes: every class gets a row in a sortable
overview, ``top_k`` classes get the full treatment (see :mod:`.page`).
"""
from .page import DEFAULT_TOP_K, SIZE_BUDGET_BYTES, display_image, write_report

__all__ = ["DEFAULT_TOP_K", "SIZE_BUDGET_BYTES", "display_image", "write_report"]
