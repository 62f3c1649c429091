"""``unhans dynamics STORE --html``: a page of a training run that is still being recorded."""
from __future__ import annotations

import re
import subprocess
import sys
import time

from unhans.pipeline.cli import main
from unhans.pipeline.report.training_monitor import render_training_page, watch
from unhans.spray.dynamics.trajectory_store import stored_epochs

EPOCHS = 8
WRITER = """
import sys, time, torch
from unhans.spray.dynamics import DynamicsRecorder
torch.manual_seed(0)
n, k = 3000, 10
y = torch.randint(0, k, (n,))
with DynamicsRecorder(n, k, store=sys.argv[1]) as recorder:
    for epoch in range({epochs}):
        for start in range(0, n, 500):
            idx = torch.arange(start, min(start + 500, n))
            logits = torch.randn(len(idx), k) + 3 * (epoch / {epochs}) * torch.nn.functional.one_hot(y[idx], k)
            recorder.update(idx, logits, y[idx])
        recorder.end_epoch()
        recorder.flush()
        time.sleep(0.15)
""".format(epochs=EPOCHS)


def _epochs_in(page: str) -> int:
    return int(re.search(r"data-epochs='(\d+)'", page).group(1))


def test_rendering_while_a_training_loop_appends_shows_only_complete_epochs(tmp_path):
    store, page = tmp_path / "store", tmp_path / "monitor.html"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store)])
    seen = []
    try:
        while writer.poll() is None or not seen or seen[-1] < EPOCHS:
            before = len(stored_epochs(store)) if store.exists() else 0
            shown = render_training_page(store, page) if store.exists() else 0
            after = len(stored_epochs(store)) if store.exists() else 0
            if store.exists():
                assert _epochs_in(page.read_text()) == shown
            assert before <= shown <= after  # whole epochs only, none that was not complete
            seen.append(shown)
            time.sleep(0.02)
            assert len(seen) < 5000
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert seen == sorted(seen) and seen[-1] == EPOCHS and len(set(seen)) > 2  # it watched the run grow
    text = page.read_text()
    assert "Top 30 mislabel suspects so far" in text and "<svg" in text


def test_watch_rerenders_when_epochs_arrive_and_the_cli_renders_once(tmp_path, capsys):
    store, page = tmp_path / "store", tmp_path / "monitor.html"
    subprocess.run([sys.executable, "-c", WRITER.replace(f"range({EPOCHS})", "range(2)"), str(store)], check=True)
    lines = []
    watch(store, page, 0.01, rounds=3, log=lines.append)
    assert len(lines) == 1 and _epochs_in(page.read_text()) == 2  # rendered once: nothing new arrived
    assert main(["dynamics", str(store), "--html", str(tmp_path / "once.html")]) == 0
    assert "2 complete epochs" in capsys.readouterr().out
    assert main(["dynamics", str(store), "--watch", "1"]) == 2  # --watch needs --html
