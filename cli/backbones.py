"""``main.py backbones``: timm backbones, their size and input, and where their weights come from."""

from __future__ import annotations

import argparse

from cli.parsing import EXIT_OK, Subparsers, add_command


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "backbones", "list timm backbones and where their weights come from",
                         ["python main.py backbones", "python main.py backbones 'resnet*'"])
    parser.add_argument("pattern", nargs="?", default=None, help="wildcard filter, e.g. 'efficientnet*'")
    return parser


def run(arguments: argparse.Namespace) -> int:
    from engine.models.backbones import describe_backbone, list_backbones
    from engine.models.weights import list_weights_providers

    if arguments.pattern:
        names = list_backbones(arguments.pattern)
    else:  # those whose weights are here without a download
        names = [provider.backbone for provider in list_weights_providers() if provider.is_available()]
    print(f"{'backbone':40} {'params':>9} {'input':>11}  weights")
    for name in names:
        info = describe_backbone(name)
        size = "x".join(str(side) for side in info.input_size[1:])
        print(f"{name:40} {info.num_params / 1e6:8.1f}M {size:>11}  {', '.join(info.weight_sources) or 'file only'}")
    if not arguments.pattern:
        print("\n(offline backbones; pass a pattern such as 'resnet*' to list every timm model)")
    return EXIT_OK
