"""``unhans dynamics STORE --html FILE``: a page to watch a training run epoch by epoch.

It reads the trajectory a :class:`~unhans.spray.dynamics.DynamicsRecorder` is still appending to.
Epoch files are written to a temporary name and renamed into place, so a reader sees an epoch
whole or not at all; the page is built from the complete epochs found when it starts reading
(``epoch-*.npz`` 0..E-1, see :mod:`unhans.spray.dynamics.trajectory_store`) and replaces FILE
atomically, so a browser never loads half a page. ``--watch SECONDS`` re-renders whenever the
number of complete epochs has changed.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .markup import CSS, e, fmt
from .mislabels import data_map_html

TOP_SUSPECTS = 30


def render_training_page(store: str | Path, path: str | Path) -> int:
    """Write the page for the complete epochs of ``store`` to ``path``; returns the number of epochs shown."""
    from unhans.spray.dynamics import load_trajectory, statistics_from_trajectory
    from unhans.spray.dynamics.trajectory_store import stored_epochs
    from unhans.storage.atomic import write_bytes_atomic

    if not Path(store).is_dir():
        raise FileNotFoundError(f"{store}: no such directory (the store given to DynamicsRecorder)")
    if not stored_epochs(store):
        write_bytes_atomic(Path(path), (f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style></head>"
                                        f"<body><h1>Training dynamics</h1><p class='muted' data-epochs='0'>No complete "
                                        f"epoch yet in <code>{e(Path(store).resolve())}</code>.</p></body></html>").encode())
        return 0
    trajectory = load_trajectory(store)
    epochs = trajectory.num_epochs
    table = statistics_from_trajectory(trajectory)

    def column(name: str, dtype=np.float64) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype)

    ids = column("sample_id", np.int64)
    score, suspect = column("mislabel_score"), column("mislabel_suspect", bool)
    labels = np.full(len(ids), -1, np.int64)
    dynamics = {c: column(c) for c in ("confidence", "variability", "correctness")}
    keys = [str(i) for i in ids]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>unhans training monitor — {e(Path(store).name)}"
           f"</title><style>{CSS}</style></head><body><h1>Training dynamics</h1>"
           f"<div class='muted'>store <code>{e(Path(store).resolve())}</code> · <b data-epochs='{epochs}'>{epochs} "
           f"complete epoch(s)</b> · {len(ids)} samples · rendered {e(stamp)}</div>",
           "<div class='cards' style='margin-top:16px'>"
           f"<div class='card'><b>{int(suspect.sum())}</b>mislabel suspects</div>"
           f"<div class='card'><b>{int(column('ambiguous', bool).sum())}</b>ambiguous samples</div></div>"]
    if epochs == 0:
        out.append("<p class='muted'>No complete epoch yet.</p>")
    else:
        out.append(data_map_html(dynamics, suspect, score, keys, labels, lambda k: "?"))
        order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:TOP_SUSPECTS]
        out.append(f"<h2>Top {len(order)} mislabel suspects so far</h2><table><tr><th>sample id</th>"
                   "<th>mislabel score</th><th>AUM</th><th>confidence</th><th>variability</th>"
                   "<th>forgetting events</th><th>suspect</th></tr>")
        aum, forgetting = column("aum"), column("forgetting_events")
        for i in order:
            out.append(f"<tr class='{'flagged' if suspect[i] else ''}'><td>{int(ids[i])}</td><td>{fmt(float(score[i]))}"
                       f"</td><td>{fmt(float(aum[i]))}</td><td>{fmt(float(dynamics['confidence'][i]))}</td>"
                       f"<td>{fmt(float(dynamics['variability'][i]))}</td><td>{int(np.nan_to_num(forgetting[i]))}</td>"
                       f"<td>{'yes' if suspect[i] else ''}</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    write_bytes_atomic(Path(path), "".join(out).encode())
    return epochs


def watch(store: str | Path, path: str | Path, seconds: float, *, rounds: int | None = None,
          log=print) -> None:
    """Re-render every ``seconds`` when the number of complete epochs changed (``rounds``: stop after that many
    checks; None: until interrupted)."""
    from unhans.spray.dynamics.trajectory_store import stored_epochs

    shown, checks = None, 0
    while rounds is None or checks < rounds:
        count = len(stored_epochs(store))
        if count != shown:
            shown = render_training_page(store, path)
            log(f"{datetime.now().strftime('%H:%M:%S')} {path}: {shown} epoch(s)")
        checks += 1
        if rounds is None or checks < rounds:
            time.sleep(seconds)
