"""``main.py cam``: the Grad-CAM class activation map of one image, drawn over it as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.options import add_device_option
from cli.parsing import EXIT_OK, Subparsers, add_command, refuse


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "cam", "draw the Grad-CAM class activation map of one image as a PNG",
                         ["python main.py cam RUN_DIR photo.jpg --out photo-cam.png",
                          "python main.py cam ensemble.json photo.jpg --class bag"])
    parser.add_argument("model", help="a .safetensors checkpoint, a run folder (its best) or an ensemble manifest")
    parser.add_argument("image", help="the image file")
    parser.add_argument("--class", dest="class_name", metavar="NAME",
                        help="class to explain (default: the predicted one)")
    parser.add_argument("--out", metavar="FILE", help="overlay PNG (default: IMAGE_STEM-cam.png beside the image)")
    parser.add_argument("--alpha", type=float, default=0.45, help="share of the colour map, 0 to 1 (default 0.45)")
    parser.add_argument("--colormap", default="jet", help="a matplotlib colormap name (default jet)")
    add_device_option(parser)
    return parser


def run(arguments: argparse.Namespace) -> int:
    from engine.core.atomic import atomic_write
    from engine.evaluation.activation_map import overlay
    from engine.evaluation.gradcam import class_activation_map

    activation = class_activation_map(arguments.model, arguments.image, device=arguments.device)
    if arguments.class_name is not None and arguments.class_name != activation.class_name:
        if arguments.class_name not in activation.classes:
            return refuse(f"--class: {arguments.class_name!r} is not one of {', '.join(activation.classes)}")
        activation = class_activation_map(arguments.model, arguments.image, device=arguments.device,
                                          class_index=activation.classes.index(arguments.class_name))
    image = Path(arguments.image)
    out = Path(arguments.out) if arguments.out else image.with_name(f"{image.stem}-cam.png")
    picture = overlay(activation, arguments.alpha, arguments.colormap)
    atomic_write(out, lambda temp: picture.save(temp, format="PNG"))
    top = ", ".join(f"{name} {probability:.1%}" for name, probability in activation.top)
    print(f"{out}: evidence for {activation.class_name} ({activation.probability:.1%}); layer {activation.layer}; "
          f"top: {top}")
    return EXIT_OK
