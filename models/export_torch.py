"""Export an ``nn.Embedding`` from a PyTorch checkpoint into the model repository.

    python models/export_torch.py CHECKPOINT.pt --key embedding.weight --name words \
        [--padding-idx 0] [--max-norm 1.0] [--onnx]

CHECKPOINT is a state dict (``torch.save(model.state_dict(), ...)``); ``--key`` names the
weight. Writes ``<repo>/<name>.npy`` (or ``.onnx`` via ``torch.onnx.export``) and the options.
``--onnx`` needs ``onnxscript`` besides torch (``pip install onnxscript``, or the project's
``reference`` extra): torch's default ``dynamo=True`` exporter is built on it. ``--max-norm``
goes into the ``.toml`` (the exported graph is a plain ``Gather``; the service applies it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--key", required=True, help="state-dict key of the embedding weight")
    parser.add_argument("--name", required=True, help="table name")
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    parser.add_argument("--padding-idx", type=int)
    parser.add_argument("--max-norm", type=float)
    parser.add_argument("--norm-type", type=float)
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="export an ONNX Gather graph instead of .npy (needs: pip install onnxscript)",
    )
    args = parser.parse_args()

    import torch

    weight = torch.load(args.checkpoint, map_location="cpu", weights_only=True)[args.key]
    args.repository.mkdir(parents=True, exist_ok=True)
    if args.onnx:
        try:
            import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) imports it
        except ImportError:
            parser.error("--onnx needs onnxscript: pip install onnxscript")
        # No max_norm on the layer: it would put torch's renorm into the graph; the
        # service applies max_norm from the .toml instead.
        layer = torch.nn.Embedding.from_pretrained(weight, padding_idx=args.padding_idx)
        out = args.repository / f"{args.name}.onnx"
        torch.onnx.export(layer, (torch.zeros(1, 8, dtype=torch.long),), str(out), dynamo=True)
    else:
        out = args.repository / f"{args.name}.npy"
        np.save(out, np.ascontiguousarray(weight.detach().numpy()))
    options = {
        "padding_idx": args.padding_idx,
        "max_norm": args.max_norm,
        "norm_type": args.norm_type,
    }
    lines = [f"{key} = {value}" for key, value in options.items() if value is not None]
    if lines:
        out.with_suffix(".toml").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} {tuple(weight.shape)}")


if __name__ == "__main__":
    main()
