"""A tokenizer taken from elsewhere instead of trained: `tokenizer.model`, or a parent run's.

`load_reused` resolves what `tokenizer.model` names (a .model file, or a folder holding the
model files, as `mtkit tokenizer train`, `prepare` and `train` write them); `files_digest` is
the content hash that goes into the prepared data's fingerprint, so a different tokenizer
means different prepared data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mtkit.config.schema import ConfigError
from mtkit.data.tokenizer import (
    JOINT_FILE,
    SRC_FILE,
    TGT_FILE,
    Tokenizer,
    TokenizerError,
    TokenizerPair,
)

KEY = "tokenizer.model"


def load_reused(path: Path, joint: bool, key: str = KEY) -> TokenizerPair:
    """The tokenizer(s) at `path`; any problem is one ConfigError line naming `key` and `path`.

    `joint` (tokenizer.joint) must agree with what `path` holds: a single model is joint, a
    folder with spm.src.model + spm.tgt.model holds separate ones.
    """
    path = Path(path)
    try:
        if path.is_file():
            tok = Tokenizer.load(path)
            pair = TokenizerPair(tok, tok)
        elif path.is_dir():
            pair = _load_folder(path, key)
        else:
            raise ConfigError(f"{key}: {path}: no such sentencepiece model file or folder")
    except TokenizerError as e:
        raise ConfigError(f"{key}: {e}") from None
    if pair.joint != joint:
        holds = "one joint model" if pair.joint else f"separate models ({SRC_FILE}, {TGT_FILE})"
        raise ConfigError(
            f"{key}: {path} holds {holds}, but tokenizer.joint is {str(joint).lower()}; "
            f"set tokenizer.joint: {str(pair.joint).lower()}"
        )
    return pair


def _load_folder(path: Path, key: str) -> TokenizerPair:
    if (path / JOINT_FILE).is_file() or (path / SRC_FILE).is_file() or (path / TGT_FILE).is_file():
        return TokenizerPair.load(path)
    inner = path / "tokenizer"  # `mtkit tokenizer train`'s default output folder
    if (inner / JOINT_FILE).is_file() or (inner / SRC_FILE).is_file():
        return TokenizerPair.load(inner)
    raise ConfigError(
        f"{key}: {path} holds no sentencepiece model (expected {JOINT_FILE}, or {SRC_FILE} and "
        f"{TGT_FILE}: a .model file, a folder written by `mtkit tokenizer train`, a prepared "
        "dir or a run dir)"
    )


def files_digest(pair: TokenizerPair) -> dict[str, str]:
    """File name -> sha256 of its bytes, for fingerprints and run metadata."""
    return {name: hashlib.sha256(blob).hexdigest() for name, blob in pair.model_files().items()}


def same_files(a: TokenizerPair, b: TokenizerPair) -> bool:
    """True when both pairs are the same model file(s), byte for byte."""
    return a.model_files() == b.model_files()
