"""Export a Keras ``Embedding`` layer into the model repository.

    python models/export_keras.py MODEL.keras --layer embedding --name words

Writes ``<repo>/<name>.npy`` and, when the layer has ``mask_zero=True``, ``<name>.toml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--layer", required=True, help="name of the Embedding layer")
    parser.add_argument("--name", required=True, help="table name")
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    args = parser.parse_args()

    import keras

    layer = keras.saving.load_model(args.model).get_layer(args.layer)
    weights = np.ascontiguousarray(layer.get_weights()[0])
    args.repository.mkdir(parents=True, exist_ok=True)
    out = args.repository / f"{args.name}.npy"
    np.save(out, weights)
    if getattr(layer, "mask_zero", False):
        out.with_suffix(".toml").write_text("mask_zero = true\n")
    print(f"wrote {out} {weights.shape}")


if __name__ == "__main__":
    main()
