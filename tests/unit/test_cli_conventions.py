"""What users of mature CLIs expect: --version, -h, shell completion, clean help, one spelling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from mtkit.cli.main import app
from mtkit.config.schema import ExperimentConfig

ROOT = Path(__file__).resolve().parents[2]


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The argument path of every command and group, the root's included: (), ("tokenizer",), ..."""
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from commands(sub, (*path, name))


ALL = list(commands(get_command(app)))


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), prog_name="mtkit", terminal_width=200)
    return result.exit_code, result.output


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_mtkit_torch_and_devices(flag: str) -> None:
    import torch

    code, out = invoke(flag)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("mtkit ") and "Python" in lines[0]
    assert lines[1] == f"torch {torch.__version__}"
    assert "CUDA" in lines[2]
    assert f"CPU capability: {torch.backends.cpu.get_cpu_capability()}" in lines[2]


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "mtkit")
def test_dash_h_is_help_and_help_is_clean(path: tuple[str, ...]) -> None:
    code, long = invoke(*path, "--help")
    assert code == 0, long
    assert invoke(*path, "-h") == (0, long)
    usage = next(line for line in long.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage  # RUN, not {run}
    assert "<bool>" not in long and "list[" not in long


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "mtkit")
def test_every_option_and_argument_has_help(path: tuple[str, ...]) -> None:
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    missing = [p.name for p in command.params if not getattr(p, "help", None)]
    assert not missing, f"mtkit {' '.join(path)}: no help for {missing}"


def test_shell_completion_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = invoke("--help")
    assert "--install-completion" in out and "--show-completion" in out
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    code, out = invoke("--show-completion", "bash")
    assert code == 0 and "_MTKIT_COMPLETE" in out
    for words, expected in [
        ("mtkit tra", ["train", "translate"]),
        ("mtkit translate --gre", ["--greedy"]),
    ]:
        env = {
            "_MTKIT_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        result = CliRunner().invoke(app, [], prog_name="mtkit", env=env)
        assert result.output.split() == expected, words


@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [("--device", "gpu", "training.device"), ("--precision", "fp8", "training.precision")],
)
def test_train_device_and_precision_are_config_keys(
    tmp_path: Path, flag: str, value: str, key: str
) -> None:
    """`train --device X` is `--set training.device=X`: checked as the key, exit 2, no run dir."""
    code, out = invoke("train", str(ROOT / "configs" / "demo.yaml"), flag, value,
                       "--set", f"run_dir={tmp_path / 'run'}")  # fmt: skip
    assert code == 2
    assert out.strip().splitlines() == [out.strip()] and f"{key}: expected" in out
    assert not (tmp_path / "run").exists()


def test_train_device_and_precision_reach_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ExperimentConfig] = []

    def fake_train(cfg: ExperimentConfig, resume: bool, overwrite: bool, **_: object) -> Path:
        seen.append(cfg)
        return tmp_path

    monkeypatch.setattr("mtkit.training.loop.train", fake_train)
    config, run_dir = str(ROOT / "configs" / "demo.yaml"), f"run_dir={tmp_path / 'run'}"
    code, out = invoke("train", config, "--device", "cpu", "--precision", "bfloat16", "-s", run_dir)
    assert code == 0, out
    assert (seen[0].training.device, seen[0].training.precision) == ("cpu", "bfloat16")
