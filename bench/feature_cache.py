"""What the feature cache buys: an uncached head epoch against a cached one, in one run.

An uncached epoch must push every training image through the frozen backbone before
the head can learn; a cached epoch reads the stored vectors. Both train the same head
on the demo project's training split. Prints both times and their ratio (goal >= 50).
Usage: ``python -m bench.feature_cache [--data FOLDER]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from augment import create_eval_transform
from engine.core.device import plan_device
from engine.data.loading import FeatureBatches
from engine.data.prepare import prepare_dataset
from engine.models.backbones import classifier_of, create_model
from engine.models.features import FeatureCache, FeatureView, extract_features

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def head_epoch(head: nn.Module, batches: FeatureBatches, optimizer: torch.optim.Optimizer) -> None:
    loss_function = nn.CrossEntropyLoss()
    for features, targets in batches:
        loss = loss_function(head(features), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEMO)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--cached-epochs", type=int, default=20)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        dataset = prepare_dataset(arguments.data, project_dir=Path(scratch) / "project")
        records = dataset.splits["train"]
        targets = torch.tensor([dataset.class_index(record.label) for record in records])
        loaded = create_model(arguments.backbone, num_classes=len(dataset.classes))
        plan = plan_device("auto")
        backbone = plan.prepare_model(loaded.model).eval()
        head = classifier_of(loaded.model)
        optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
        transform = create_eval_transform(loaded.data_settings)

        def uncached_epoch() -> float:
            started = time.perf_counter()
            view = FeatureView(FeatureCache("bench", root=Path(tempfile.mkdtemp(dir=scratch))), 0, transform)
            result = extract_features(backbone, [r.path for r in records], [r.sha256 for r in records],
                                      views=[view], plan=plan, batch_size=64)
            head_epoch(head, FeatureBatches(result.features, targets, batch_size=32, shuffle=True), optimizer)
            return time.perf_counter() - started

        uncached = uncached_epoch()
        view = FeatureView(FeatureCache("bench", root=Path(scratch) / "kept"), 0, transform)
        paths, hashes = [r.path for r in records], [r.sha256 for r in records]
        extract_features(backbone, paths, hashes, views=[view], plan=plan)
        cached_times = []
        for _ in range(arguments.cached_epochs):
            started = time.perf_counter()
            result = extract_features(backbone, paths, hashes, views=[view], plan=plan)  # reads the cache
            head_epoch(head, FeatureBatches(result.features, targets, batch_size=32, shuffle=True), optimizer)
            cached_times.append(time.perf_counter() - started)
    cached = statistics.median(cached_times)
    print(f"{arguments.backbone} on {len(records)} training images of {arguments.data}, {plan.describe()}")
    print(f"uncached head epoch  {uncached * 1e3:9.1f} ms  (backbone forward for every image)")
    print(f"cached head epoch    {cached * 1e3:9.1f} ms  (median of {arguments.cached_epochs}, cache read included)")
    print(f"ratio uncached/cached {uncached / cached:8.1f}  (goal >= 50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
