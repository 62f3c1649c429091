"""``unhans export virelay``: a run as a ViRelAy project, checked through a real ViRelAy server.

ViRelAy pins its own Flask/Pillow versions, so it runs from its own virtual environment: the one
named by ``$VIRELAY_PYTHON`` (its python), else one created here with ``pip install virelay``
(from the same package index as everything else; nothing is fetched at audit run time).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from unhans.pipeline import run_audit
from unhans.pipeline.cli import main
from unhans.pipeline.config import from_dict

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("virelay")
    run_audit(from_dict({"training": {"epochs": 10}}), root / "run", quiet=True)
    assert main(["export", "virelay", str(root / "run"), str(root / "project")]) == 0
    return root


def test_the_project_files_have_the_layout_virelay_reads(project):
    import yaml

    out = project / "project"
    config = yaml.safe_load((out / "project.yaml").read_text())["project"]
    assert config["dataset"]["type"] == "hdf5" and "-" not in config["analyses"][0]["analysis_method"]
    labels = json.loads((out / "label-map.json").read_text())
    assert [e["word_net_id"] for e in labels] == [f"class_{k}" for k in range(10)]
    with h5py.File(out / "dataset.h5") as f:
        assert f["data"].shape == (1257, 3, 32, 32) and f["data"].dtype == np.uint8
    with h5py.File(out / "attribution.h5") as f:
        assert f["attribution"].shape == (1257, 3, 32, 32) and f["index"].shape == (1257,)
        np.testing.assert_allclose(f["prediction"][:].sum(1), 1.0, rtol=1e-5)
    with h5py.File(out / "analysis.h5") as f:
        assert sorted(f) == sorted(f"class_{k}" for k in range(10))
        groups = [f[name] for name in f]
        names = {(tuple(g["embedding"]), tuple(g["cluster"])) for g in groups}
        assert len(names) == 1  # every class has the same embeddings and clusterings
        assert set(groups[0]["embedding"]) == {"spectral", "umap"}
        assert {f"spray_k{k:02d}" for k in range(2, 9)} | {"spray_chosen"} == set(groups[0]["cluster"])
        assert sum(len(g["index"]) for g in groups) == 1257
        assert all(np.isfinite(g["embedding/spectral"][:]).all() and np.isfinite(g["embedding/umap"][:]).all()
                   for g in groups)


def _virelay_python(root: Path) -> str:
    given = os.environ.get("VIRELAY_PYTHON")
    if given:
        return given
    venv = root / "virelay-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "virelay"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"pip install virelay failed: {done.stderr[-2000:]}"
    return str(venv / "bin" / "python")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def _strict_json(body: bytes):
    return json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"not JSON: {c}")))


def test_a_real_virelay_server_serves_the_exported_analysis_and_heatmaps(project, tmp_path):
    python = _virelay_python(tmp_path)
    port = _free_port()
    base = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [python, "-m", "virelay", str(project / "project" / "project.yaml"), "--host", "127.0.0.1", "--port",
         str(port)], env={**os.environ, "BROWSER": "true"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(240):
            try:
                _, _, body = _get(f"{base}/projects")
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        else:
            pytest.fail("the ViRelAy server did not answer within 120 s")
        (listed,) = _strict_json(body)
        _, _, body = _get(f"{base}/projects/{listed['id']}")
        (method,) = _strict_json(body)["analysisMethods"]
        assert method["name"] == "spectral-analysis"  # ViRelAy shows '_' as '-'
        assert set(method["embeddings"]) == {"spectral", "umap"}
        assert "spray_chosen" in method["clusterings"] and "spray_k02" in method["clusterings"]
        assert len(method["categories"]) == 10
        with h5py.File(project / "project" / "analysis.h5") as f:
            members = set(f["class_3/index"][:].tolist())
        query = urllib.parse.urlencode({"category": "class_3", "clustering": "spray_chosen", "embedding": "umap"})
        _, _, body = _get(f"{base}/projects/{listed['id']}/analyses/{method['name']}?{query}")
        points = _strict_json(body)["embedding"]
        assert {p["attributionIndex"] for p in points} == members and len(points) == len(members)
        sample = min(members)
        status, kind, image = _get(f"{base}/projects/{listed['id']}/attributions/{sample}/heatmap"
                                   "?colorMap=black-fire-red&superimpose=false")
        assert status == 200 and kind == "image/jpeg" and image[:3] == b"\xff\xd8\xff"
        status, kind, image = _get(f"{base}/projects/{listed['id']}/dataset/{sample}/image")
        assert status == 200 and kind == "image/jpeg"
    finally:
        server.terminate()
        server.wait(timeout=30)
