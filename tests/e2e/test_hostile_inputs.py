"""Every command, given what a careless or hostile user gives it, loses nothing the user has.

Each case runs a command through the CLI in a folder holding a small but complete world (a
run with checkpoints, its config, tokenizer, metrics and log; parallel text; configs) and
checks: the exit code, exactly one `error:` line saying what is wrong, no traceback, and every
file of the folder byte for byte as it was (nothing replaced, removed or added).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner, Result

from mtkit.checkpoint import save_checkpoint
from mtkit.cli.main import app
from mtkit.config.load import dump_config
from tests.conftest import REPO
from tests.tiny_checkpoint import checkpoint_state, tiny_config, train_tiny_tokenizers
from tests.tiny_corpus import SRC, TGT

SOURCES = ["the cat sees the dog", "a big red house", "the small tree sleeps"]
REFERENCES = ["die Katze sieht den Hund", "ein großes rotes Haus", "der kleine Baum schläft"]


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """run/ as training leaves it (step files, last.pt and best.pt hard links to them,
    config.yaml, spm.model, metrics.jsonl, train.log), text files, a config and an attention
    dump; copied afresh for every test."""
    root = tmp_path_factory.mktemp("world")
    run = root / "run"
    tokenizers = train_tiny_tokenizers(root / "spm")
    shutil.rmtree(root / "spm")
    cfg = tiny_config()
    for step in (1, 2):
        torch.manual_seed(step)
        state = checkpoint_state(cfg, tokenizers)
        state["train_state"] = {"step": step}
        save_checkpoint(run / f"step_00000{step}.pt", state)
    os.link(run / "step_000002.pt", run / "last.pt")
    os.link(run / "step_000001.pt", run / "best.pt")
    (run / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    tokenizers.save(run)
    metrics = [{"kind": "train", "step": s, "loss": 5.0 - s} for s in (1, 2)]
    metrics.append({"kind": "valid", "step": 2, "loss": 4.5, "bleu": 0.1})
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run / "train.log").write_text("12:00:00 | INFO | saved checkpoint step_000002.pt\n")
    (root / "src.en").write_text("".join(s + "\n" for s in SOURCES), encoding="utf-8")
    (root / "ref.de").write_text("".join(s + "\n" for s in REFERENCES), encoding="utf-8")
    (root / "att.jsonl").write_text(
        json.dumps({"index": 0, "source": ["a"], "target": ["b"], "weights": [[1.0]]}) + "\n"
    )
    (root / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    write_config(root / "exp.yaml", root, {"train": str(root / "pairs")})
    for lang, lines in (("en", SRC), ("de", TGT)):
        (root / f"pairs.{lang}").write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    return root


def write_config(path: Path, root: Path, data: dict[str, object], **top: object) -> Path:
    raw = {
        "run_dir": str(root / "newrun"),
        **top,
        "data": {"valid": None, "test": None, "valid_size": 20,
                 "prepared_dir": str(root / "prepared"), **data},
        "tokenizer": {"vocab_size": 60},
        "model": {"d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
                  "d_ff": 32, "max_positions": 128},
        "training": {"device": "cpu", "max_steps": 2},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
def world(world_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "world"
    shutil.copytree(world_template, root, symlinks=True)
    os.link(root / "run" / "step_000002.pt", root / "run" / "last.pt.new")  # keep the links
    os.replace(root / "run" / "last.pt.new", root / "run" / "last.pt")
    os.link(root / "run" / "step_000001.pt", root / "run" / "best.pt.new")
    os.replace(root / "run" / "best.pt.new", root / "run" / "best.pt")
    monkeypatch.chdir(root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def refused(world: Path, args: list[str], code: int, *needles: str, input: str = "") -> str:
    """Run `mtkit ARGS` in `world`; assert the exit code, one error line holding every needle,
    no traceback and every file as it was. Returns the error line."""
    before = snapshot(world)
    result: Result = CliRunner().invoke(app, args, input=input)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert snapshot(world) == before, "a refused command changed files"
    return errors[0]


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["translate", "run", "-i", "src.en", "-o", "src.en"], ["is also an input"]),
        (["translate", "run", "-o", "run/best.pt"], ["is also an input"]),
        (["translate", "run", "-o", "run/step_000009.pt"], ["file of the run"]),
        (["translate", "run", "-o", "run/config.yaml"], ["file of the run"]),
        (["translate", "run/step_000002.pt", "-o", "run/last.pt"], ["is also an input"]),
        (["translate", "run", "-i", "src.en", "--attention", "src.en"], ["is also an input"]),
        (["translate", "run", "-i", "src.en", "-o", "ref.de"], ["exists", "--overwrite"]),
        (["evaluate", "run", "--src", "src.en", "--ref", "ref.de", "-o", "src.en"], ["input"]),
        (["evaluate", "run", "--src", "src.en", "--ref", "ref.de", "-o", "ref.de",
          "--overwrite"], ["is also an input"]),
        (["tokenizer", "encode", "run/spm.model", "-i", "src.en", "-o", "src.en"], ["input"]),
        (["tokenizer", "decode", "run/spm.model", "-i", "src.en", "-o", "run/spm.model"],
         ["is also an input"]),
        (["average", "run", "--last", "2", "-o", "run/last.pt", "--overwrite"], ["input"]),
        (["average", "run", "--last", "1", "-o", "run/config.yaml", "--overwrite"], ["of the run"]),
        (["plot", "run", "-o", "run/metrics.jsonl", "--overwrite"], ["is also an input"]),
        (["plot", "run", "-o", "run/train.log", "--overwrite"], ["file of the run"]),
        (["plot-attention", "att.jsonl", "-o", "att.jsonl", "--overwrite"], ["input"]),
        (["export", "run", "-o", "run/best.pt", "--force"], ["file of the run"]),
    ],
)  # fmt: skip
def test_an_output_never_replaces_an_input_or_a_runs_file(
    world: Path, args: list[str], needles: list[str]
) -> None:
    refused(world, args, 2, *needles, input="the cat\n")


def test_existing_outputs_are_replaced_only_with_overwrite(world: Path) -> None:
    (world / "hyp.de").write_text("yesterday's translations\n", encoding="utf-8")
    for command in (["translate", "run", "-i", "src.en"], ["tokenizer", "encode", "run/spm.model",
                    "-i", "src.en"]):  # fmt: skip
        refused(world, [*command, "-o", "hyp.de"], 2, "hyp.de: --output exists", "--overwrite")
    result = CliRunner().invoke(app, ["translate", "run", "-i", "src.en", "-o", "hyp.de",
                                      "--overwrite"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len((world / "hyp.de").read_text(encoding="utf-8").splitlines()) == 3


def test_evaluate_names_its_hypotheses_by_checkpoint_and_search(world: Path) -> None:
    """Evaluations with other checkpoints or search options never share a file; the same one
    again is refused without --overwrite."""
    base = ["evaluate", "--src", "src.en", "--ref", "ref.de", "--metrics", "bleu"]
    for extra in (["run"], ["run", "--greedy"], ["run/step_000002.pt", "--beam", "2"]):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 0, result.output
    hyps = sorted(p.name for p in (world / "run").glob("src.*.hyp.de"))
    assert hyps == ["src.best.beam2.lp1.0.hyp.de", "src.best.greedy.hyp.de",
                    "src.step_000002.beam2.lp1.0.hyp.de"]  # fmt: skip
    refused(world, [*base, "run"], 2, "src.best.beam2.lp1.0.hyp.de: --output exists")


def test_average_refuses_to_replace_an_earlier_average(world: Path) -> None:
    result = CliRunner().invoke(app, ["average", "run", "--last", "2"])
    assert result.exit_code == 0, result.output
    refused(world, ["average", "run", "--last", "2"], 2, "average_last2.pt", "--overwrite")


# --------------------------------------------------------------------------- training


def test_resume_with_another_model_shape_changes_nothing(world: Path) -> None:
    """The checks run before the run directory is touched: config.yaml stays as it was, so a
    plain --resume afterwards still works; the message names the key and both values."""
    args = ["train", "run", "--resume", "--set", "model.d_model=64"]
    refused(world, args, 2, "model.d_model is 64 in this config but 16 in the checkpoint")


def test_config_errors_create_nothing(world: Path) -> None:
    """float16 on a CPU: exit 2 before the run folder (or train.log in it) exists."""
    if torch.cuda.is_available():
        pytest.skip("float16 is valid where CUDA is")
    args = ["train", "exp.yaml", "--set", "training.precision=float16"]
    refused(world, args, 2, "training.precision: float16 needs a CUDA device")
    refused(world, ["train", "exp.yaml", "--precision", "float16"], 2, "float16")


@pytest.mark.parametrize("name", ["../../x", "ABSOLUTE", "a/b", "..", "", "a\\b"])
def test_a_run_name_is_a_name_not_a_path(
    world: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without run_dir the run goes to runs/<name>: a name must not lead out of runs/."""
    name = str(world / "elsewhere") if name == "ABSOLUTE" else name
    config = write_config(world / "named.yaml", world, {"train": "pairs"}, name=name, run_dir=None)
    (world / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(world / "a" / "b")  # ../../x would be world/x
    refused(world, ["train", str(config)], 2, "name: expected a plain name", "run_dir")


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "the config is empty"), ("# nothing yet\n", "the config is empty"),
     ("name: x\n", "data.train: required"), ("model:\n  d_model: 64\n", "data.train: required")],
)  # fmt: skip
@pytest.mark.parametrize("command", [["train"], ["prepare"], ["tokenizer", "train"]])
def test_an_empty_or_sectionless_config_is_refused(
    world: Path, text: str, needle: str, command: list[str]
) -> None:
    (world / "c.yaml").write_text(text, encoding="utf-8")
    refused(world, [*command, "c.yaml"], 2, needle, "configs/demo.yaml")


# --------------------------------------------------------------------------- data


def test_tsv_row_with_a_tab_inside_a_field_fails_prepare(world: Path) -> None:
    rows = [f"{s}\t{t}" for s, t in zip(SRC, TGT, strict=True)]
    rows[6] = f"{SRC[6]}\t{TGT[6]}\twith a tab"
    (world / "pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = write_config(world / "tsv.yaml", world, {"format": "tsv", "train": "pairs.tsv"})
    refused(world, ["prepare", str(config)], 1, "pairs.tsv:7: 3 columns, expected 2",
            "data.on_bad_row: skip")  # fmt: skip


def test_jsonl_line_without_the_target_fails_prepare(world: Path) -> None:
    rows = [json.dumps({"en": s, "de": t}) for s, t in zip(SRC, TGT, strict=True)]
    rows[6] = json.dumps({"en": SRC[6]})
    (world / "pairs.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = write_config(world / "j.yaml", world, {"format": "jsonl", "train": "pairs.jsonl"})
    refused(world, ["prepare", str(config)], 1, "pairs.jsonl:7: no 'de'")


@pytest.mark.parametrize(("make", "kind"), [("fifo", "FIFO"), ("/dev/zero", "character device")])
def test_a_device_or_fifo_as_data_is_named(world: Path, make: str, kind: str) -> None:
    path = make
    if make == "fifo":
        path = str(world / "pipe.tsv")
        os.mkfifo(path)
    config = write_config(world / "dev.yaml", world, {"format": "tsv", "train": path})
    refused(world, ["prepare", str(config)], 1, kind)


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("name", ["binary.jsonl", "run/best.pt", "src.en"])
def test_plot_attention_on_a_file_that_is_not_an_attention_dump(world: Path, name: str) -> None:
    refused(world, ["plot-attention", name, "-o", "a.png"], 1, "not an attention file")


def test_translate_with_stdin_closed(world: Path) -> None:
    """`mtkit translate RUN <&-` (no stdin at all) is one line, not an AttributeError."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    before = snapshot(world)
    for args in (["translate", "run"], ["tokenizer", "encode", "run/spm.model"]):
        proc = subprocess.run(
            [sys.executable, "-m", "mtkit", *args], capture_output=True, text=True, env=env,
            stdin=None, preexec_fn=lambda: os.close(0), timeout=300,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            "error: no input: stdin is closed; pass --input FILE or pipe text in"
        )
        assert "Traceback" not in proc.stderr
    assert snapshot(world) == before


@pytest.mark.slow
def test_sigterm_during_start_up_leaves_no_lock(world: Path) -> None:
    """SIGTERM while prepare trains the tokenizer: exit 143 at once, the run lock released
    (a later start neither trips over it nor has to take it over)."""
    from tests.e2e.test_faults import Training

    t = Training(world / "exp.yaml", resume=False)
    t.wait_for(r"trained .*tokenizer")
    t.proc.send_signal(signal.SIGTERM)
    assert t.finish() == 143, t.output
    assert "stopped by SIGTERM during start-up" in t.output and "Traceback" not in t.output
    assert not (world / "newrun" / "train.lock").exists()
    assert not list(world.glob(".prepared.*"))  # prepare's temporary folder is gone too
