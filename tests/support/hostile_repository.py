"""A model repository an attacker (or a careless operator) built, beside good tables.

``write_hostile_repository(root)`` writes ``root/models`` and ``root/outside`` (files the
service must never read) and returns what the repository should give: the tables that
serve (with their rows) and, by name, a phrase each failure's reason must contain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.repository.compact import quantize_int8
from service.repository.demo import gather_onnx_model
from tests.support.tables import random_table, write_npy

ROWS, DIM = 50, 8
OUTSIDE_VOCAB = [f"secret-line-{i}" for i in range(ROWS)]


@dataclass
class HostileRepository:
    models: Path
    outside: Path
    good: dict[str, np.ndarray] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # name -> phrase of the reason
    vocab: list[str] = field(default_factory=list)  # keys of the ConfigMap table "cm"


def _link(link: Path, target: str | Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def _configmap(repo: HostileRepository) -> None:
    """Kubernetes ConfigMap/Secret layout: ``..data -> ..2024_01_01``, files link into it."""
    models = repo.models
    stamp = models / "..2024_01_01"
    cm = random_table(ROWS, DIM, 11)
    write_npy(stamp, "cm", cm, "padding_idx = 0\n")
    repo.vocab = [f"word{i}" for i in range(ROWS)]
    (stamp / "cm.vocab").write_text("\n".join(repo.vocab) + "\n")
    cmdir = random_table(ROWS, DIM, 12)
    write_npy(stamp / "cmdir", "table", cmdir)
    _link(models / "..data", "..2024_01_01")
    for name in ("cm.npy", "cm.toml", "cm.vocab"):
        _link(models / name, f"..data/{name}")
    _link(models / "cmdir", "..data/cmdir")
    repo.good.update(cm=cm, cmdir=cmdir)


def _escapes(repo: HostileRepository) -> None:
    """Symlinks out of the repository: a table file, a folder, options, vocab, int8 scales."""
    models, outside = repo.models, repo.outside
    write_npy(outside, "secret", random_table(ROWS, DIM, 13))
    write_npy(outside / "dir", "table", random_table(ROWS, DIM, 14))
    (outside / "secret.txt").write_text("\n".join(OUTSIDE_VOCAB) + "\n")
    (outside / "opts.toml").write_text("mask_zero = true\n")
    _link(models / "out_file.npy", outside / "secret.npy")
    _link(models / "out_dir", outside / "dir")
    write_npy(models, "out_vocab", random_table(ROWS, DIM, 15))
    _link(models / "out_vocab.vocab", outside / "secret.txt")
    write_npy(models, "out_toml", random_table(ROWS, DIM, 16))
    _link(models / "out_toml.toml", outside / "opts.toml")
    codes, scales = quantize_int8(random_table(ROWS, DIM, 17))
    np.save(models / "out_scales.npy", codes)
    np.save(outside / "scales.npy", scales)
    _link(models / "out_scales.scales.npy", outside / "scales.npy")
    _link(models / "broken.npy", models / "no-such-file.npy")
    # Relative escapes are resolved the same way.
    _link(models / "dotdot.npy", "../outside/secret.npy")
    for name in ("out_file", "out_dir", "out_vocab", "out_toml", "out_scales", "dotdot"):
        repo.failed[name] = "outside the model repository"
    repo.failed["broken"] = "broken symlink"


def _bad_files(repo: HostileRepository) -> None:
    models = repo.models
    good = random_table(ROWS, DIM, 18)
    write_npy(models, "corrupt", good)
    (models / "corrupt.npy").write_bytes((models / "corrupt.npy").read_bytes()[:300])
    (models / "notnpy.npy").write_bytes(b"PK\x03\x04 a zip, not an npy")
    with_nan = random_table(ROWS, DIM, 19)
    with_nan[7, 3] = np.nan
    write_npy(models, "nan", with_nan)
    with_inf = random_table(ROWS, DIM, 20).astype(np.float16)
    with_inf[30, 0] = -np.inf
    write_npy(models, "inf16", with_inf)
    onnx_nan = random_table(ROWS, DIM, 21)
    onnx_nan[2, 2] = np.inf
    (models / "nan_onnx.onnx").write_bytes(gather_onnx_model(onnx_nan))
    codes, scales = quantize_int8(random_table(ROWS, DIM, 22))
    scales[4] = np.nan
    np.save(models / "nan_scales.npy", codes)
    np.save(models / "nan_scales.scales.npy", scales)
    write_npy(models, "pad_bool", good, "padding_idx = true\n")
    write_npy(models, "norm_str", good, 'max_norm = "0.5"\n')
    write_npy(models, "typo", good, "max_nrom = 1.0\n")
    repo.failed.update(
        corrupt="not a loadable .npy",
        notnpy="not an .npy file",
        nan="row 7",
        inf16="row 30",
        nan_onnx="row 2",
        nan_scales="row 4",
        pad_bool="padding_idx",
        norm_str="max_norm",
        typo="did you mean 'max_norm'",
    )


def write_hostile_repository(root: Path) -> HostileRepository:
    """The hostile repository under ``root`` (``models/`` and ``outside/``)."""
    repo = HostileRepository(models=root / "models", outside=root / "outside")
    plain = random_table(ROWS, DIM, 10)
    write_npy(repo.models, "plain", plain, "max_norm = 100\n")  # an int where a float goes
    _link(repo.models / "alias.npy", "plain.npy")  # a symlink that stays inside
    repo.good.update(plain=plain, alias=plain)
    _configmap(repo)
    _escapes(repo)
    _bad_files(repo)
    return repo
