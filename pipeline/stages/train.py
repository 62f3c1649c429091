"""The train stage (embedded digits only): train the small CNN (or ViT, ``training.architecture``) on the noisy labels, recording dynamics."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np

from .context import EMBEDDED_MODEL_FACTORIES, AuditContext

STAGE = "train"


def run(ctx: AuditContext) -> None:
    import torch

    from unhans.spray.dynamics import DynamicsRecorder
    from unhans.storage import update_manifest

    from ..config import ModelConfig
    from ..devices import available_cores, limit_threads, resolve_device
    from ..model_loading import build_model
    from ..training import save_checkpoint, train_classifier

    config, layout = ctx.config, ctx.layout
    info = ctx.manifest()["dataset"]
    limit_threads(available_cores())
    device = resolve_device(config.training.device)
    images = np.load(layout.embedded_images)
    labels = np.load(layout.embedded_labels)
    test = np.load(layout.embedded_test)
    # A training run killed midway restarts from scratch: its partial trajectory goes too.
    shutil.rmtree(layout.dynamics, ignore_errors=True)
    recorder = DynamicsRecorder(num_samples=len(labels), num_classes=info["num_classes"], store=layout.root)
    torch.manual_seed(config.training.seed)
    kwargs = {"in_channels": int(images.shape[1]), "num_classes": int(info["num_classes"]),
              "image_size": int(images.shape[-1])}
    factory = EMBEDDED_MODEL_FACTORIES[config.training.architecture]
    model = build_model(ModelConfig(kind="factory", factory=factory, kwargs=kwargs))
    result = train_classifier(
        model, images, labels, config.training, device=device, recorder=recorder,
        test_images=test["images"], test_labels=test["labels"], progress=not ctx.quiet,
    )
    recorder.flush()  # the trajectory is on disk before the stage counts as done
    save_checkpoint(result.model, layout.model)
    update_manifest(layout.root, model={
        "kind": "factory", "factory": factory, "kwargs": kwargs, "checkpoint": layout.model.name,
        "fingerprint": hashlib.sha256(layout.model.read_bytes()).hexdigest()[:16],
    })
    ctx.markers.mark_stage(STAGE, seconds=result.seconds, train_accuracy=result.train_accuracy,
                           test_accuracy=result.test_accuracy, device=device)
    ctx.log(f"train: {config.training.architecture}, {config.training.epochs} epochs in {result.seconds:.1f}s on {device}, accuracy "
            f"{result.train_accuracy:.3f} on the noisy training labels, {result.test_accuracy:.3f} on clean test")
