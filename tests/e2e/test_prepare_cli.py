"""`mtkit prepare`'s table through the CLI: every row adds up when valid/test are carved, the
removal reasons are explained, the table and the closing line print once, and the reuse
message names the flag (issue 22, item 9)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mtkit.cli.main import app
from tests.tiny_corpus import SRC, TGT, write_pair


def prepare(config: Path, *args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["prepare", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def table_rows(log: str) -> dict[str, tuple[int, int, str]]:
    """split -> (read, kept, removed column) from the logged table."""
    rows = {}
    for line in log.splitlines():
        m = re.search(r"\| (train|valid|test) +(\d+) +(\d+) \|.*\| ([^|]+)$", line)
        if m:
            rows[m[1]] = (int(m[2]), int(m[3]), m[4])
    return rows


def test_the_table_adds_up_explains_itself_and_prints_once(tmp_path: Path) -> None:
    shared = range(0, 200, 4)  # 50 pairs share a target with another one: some get carved
    src = [*SRC, *(SRC[i] + " old" for i in shared), SRC[5], SRC[7]]  # and two duplicates
    tgt = [*TGT, *(TGT[i] for i in shared), TGT[5], TGT[7]]
    write_pair(tmp_path / "train", src, tgt)
    config = tmp_path / "c.yaml"
    data = {"train": str(tmp_path / "train"), "valid": None, "valid_size": 20, "test": None,
            "test_size": 10, "prepared_dir": str(tmp_path / "prep"), "max_ratio": 9.0,
            "max_len": 12}  # fmt: skip
    config.write_text(yaml.safe_dump({"data": data, "tokenizer": {"vocab_size": 80}}))
    out, log = prepare(config)

    assert log.count("| split ") == 1 and log.count("| train ") == 1
    assert (out + log).count("prepared data in") == 1
    assert out == f"prepared data in {tmp_path / 'prep'}\n"
    rows = table_rows(log)
    assert list(rows) == ["train", "valid", "test"]
    for split, (read, kept, removed) in rows.items():
        reasons = removed.split(";")[0]  # what follows ";" (truncated) was kept
        counted = sum(int(n) for n in re.findall(r"[a-z_]+ (\d+)", reasons))
        assert read - counted == kept, (split, rows[split])
    assert "carved 20 as valid" in rows["train"][2] and "carved 10 as test" in rows["train"][2]
    assert "(carved from train)" in rows["valid"][2]
    assert re.search(r"\| +overlap: a train pair sharing a sentence with a carved", log)
    assert re.search(r"\| +duplicate: ", log)
    assert re.search(r"\| +too_long: more than data.max_len=12", log)

    _, log = prepare(config)
    assert "up to date; reusing it (`mtkit prepare --force` rebuilds it)" in log
    assert "| split " not in log
