"""The prepared directory on disk: its fingerprint, the reuse check, and replacing it whole.

A new result is built in `.NAME.tmp-PID` next to `data.prepared_dir` and renamed into place
(the old one goes through `.NAME.old-PID`), so a killed prepare never leaves half a directory;
its leftovers are removed by the next prepare once PID is gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from mtkit.config.schema import ExperimentConfig
from mtkit.data.reused_tokenizer import files_digest
from mtkit.data.rows import DataError
from mtkit.data.sources import Source
from mtkit.data.tokenizer import JOINT_FILE, SRC_FILE, TGT_FILE, TokenizerPair
from mtkit.files import pid_alive

FINGERPRINT_VERSION = 1  # bump when the prepared layout or the cleaning changes meaning


def fingerprint_of(
    cfg: ExperimentConfig,
    sources: dict[str, list[Source]],
    reused: TokenizerPair | None = None,
) -> dict[str, Any]:
    """What the prepared data depends on: data/tokenizer config and input file size + mtime.

    With a `reused` tokenizer (not trained here) its content hash stands for the tokenizer
    keys: the same model files from another path give the same prepared data.
    """
    data = dataclasses.asdict(cfg.data)
    for irrelevant in ("prepared_dir", "num_proc"):
        data.pop(irrelevant)
    for key, default in (("on_bad_row", "error"), ("bidirectional", False)):
        if data[key] == default:  # absent from older fingerprints: they keep their digest
            data.pop(key)
    inputs = []
    for split, srcs in sources.items():
        for s in srcs:
            for path in s.files:
                st = path.stat()
                inputs.append(
                    {
                        "split": split,
                        "path": str(path.resolve()),
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                    }
                )
    tokenizer = dataclasses.asdict(cfg.tokenizer)
    tokenizer.pop("model")  # absent from older fingerprints: unchanged configs keep their digest
    tokenizer.pop("sampling_alpha")  # applied to training batches; the prepared data is the same
    body = {
        "version": FINGERPRINT_VERSION,
        "data": data,
        "tokenizer": tokenizer if reused is None else {"files": files_digest(reused)},
        "inputs": inputs,
    }
    return {"digest": _digest(body), **body}


def _digest(body: dict[str, Any]) -> str:
    """sha256 of the fingerprint, where data.train/valid/test count by the files they name
    (`inputs`, resolved), not by how they are spelled: data/train and /work/data/train (a
    run's saved config holds absolute paths) give the same digest."""
    data = dict(body["data"]) if isinstance(body.get("data"), dict) else {}
    if data.get("format") != "hub":
        for split in ("train", "valid", "test"):
            data[split] = _unspelled(data.get(split))
    canonical = {**body, "data": data}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _unspelled(value: Any) -> Any:
    """A data.train/valid/test value with its paths blanked (corpus options kept)."""
    if isinstance(value, list):
        return [_unspelled(v) for v in value]
    if isinstance(value, dict):
        return {**value, "path": ""}
    return None if value is None else ""


def matches(out: Path, fingerprint: dict[str, Any]) -> bool:
    """`out` is complete and its fingerprint.json has the same digest (recomputed: a
    fingerprint written before paths were spelled out counts the same)."""
    fp = out / "fingerprint.json"
    if not fp.is_file():
        return False
    has_tokenizer = (out / JOINT_FILE).is_file() or (
        (out / SRC_FILE).is_file() and (out / TGT_FILE).is_file()
    )
    complete = has_tokenizer and all((out / p).exists() for p in ("encoded", "text", "stats.json"))
    try:
        stored = json.loads(fp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not complete or not isinstance(stored, dict):
        return False
    stored.pop("digest", None)
    return _digest(stored) == str(fingerprint["digest"])


def check_replaceable(out: Path) -> None:
    """Refuse to replace a directory that prepare did not write (it would be deleted)."""
    if out.is_file():
        raise DataError(f"data.prepared_dir: {out} is a file, expected a directory")
    ours = (out / "fingerprint.json").is_file() or (out / "encoded").is_dir()
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise DataError(
            f"data.prepared_dir: {out} already holds other files (no fingerprint.json); "
            "prepare replaces the whole directory, so choose an empty or new path"
        )


def remove_stale(out: Path) -> None:
    """Delete temp/old dirs that a killed prepare left next to `out` (their pid is gone)."""
    for path in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = path.name[len(out.name) + 2 :].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit():
            continue
        # our own pid: left by an earlier failed call in this process
        if int(pid) == os.getpid() or not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`, replacing an older `out` (renames, so no half-written `out`)."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
