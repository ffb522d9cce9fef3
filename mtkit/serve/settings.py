"""What `mtkit serve` was asked for: engine, address, batching and limits (no web imports here,
so the command line can build and check it without the `serve` extra)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from mtkit.config.schema import ConfigError
from mtkit.errors import MtkitError

INSTALL_HINT = "pip install 'mtkit[serve]'"
BATCHING = ("rounds", "continuous", "auto")  # how requests share the model (`--batching`)


class ServeError(MtkitError):
    """A server that cannot start: the message is one line naming what is missing or wrong."""


@dataclass
class ServeSettings:
    """One server: the model it serves, where it listens, how it batches, what it refuses."""

    runs: list[Path]  # run directories or checkpoints (several: an ensemble), or one export
    host: str = "127.0.0.1"  # 0.0.0.0 listens on every interface
    port: int = 8000
    engine: str = "auto"  # auto, pytorch, or ctranslate2 (the run's CT2 export), as `translate`
    quantize: str = "none"  # none or int8 (PyTorch dynamic int8 Linears, or CT2 compute type)
    device: str = "auto"  # auto, cpu or cuda
    # rounds: every batch runs to its end first; continuous: beam-search requests join the
    # running search between its steps (PyTorch engine; more throughput under load, higher p99
    # at a few clients: docs/serve.md); auto: rounds, continuous while at least
    # `continuous_from` sentences are in flight. Other requests always go in rounds.
    batching: str = "auto"
    continuous_from: int = 16  # auto: sentences in flight or queued for continuous batching
    max_wait_ms: float = 20.0  # rounds: longest wait for concurrent clients to fill a batch
    # adaptive: wait only for as many requests as there were clients lately (a lone client
    # never waits); always: every round waits max_wait_ms (or until the token budget)
    batch_wait: str = "adaptive"
    max_sentences: int = 64  # per request; more is refused with 413
    max_chars: int = 1000  # per sentence; a longer one is refused with 413
    max_beam: int = 16  # largest beam_size / nbest a request may ask for (else 422)
    queue_sentences: int = 2048  # sentences waiting at most; more is refused with 503
    timeout_s: float = 30.0  # per request, queueing included; then 504

    def check(self) -> None:
        """Raise ConfigError naming the first option that cannot work."""
        from mtkit.translation.engine import check_engine, check_quantization

        check_engine(self.engine)
        check_quantization(self.quantize)
        if not self.runs:
            raise ConfigError("RUN: give a run directory, a checkpoint or an export folder")
        if len(self.runs) > 1 and self.engine == "ctranslate2":
            raise ConfigError("--engine ctranslate2 translates with one model, not an ensemble")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: expected 0 to 65535, got {self.port}")
        for name in (
            "max_sentences",
            "max_chars",
            "max_beam",
            "queue_sentences",
            "continuous_from",
        ):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag}: expected a positive number, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms: expected zero or more, got {self.max_wait_ms}")
        if self.batching not in BATCHING:
            raise ConfigError(f"--batching: expected {', '.join(BATCHING)}, got {self.batching!r}")
        if self.batch_wait not in ("adaptive", "always"):
            raise ConfigError(f"--batch-wait: expected adaptive or always, got {self.batch_wait!r}")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout: expected a positive number, got {self.timeout_s}")


def require_serve_extra() -> None:
    """Raise ServeError with the install command when FastAPI or uvicorn is missing."""
    missing = []
    for name in ("fastapi", "uvicorn"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        them = "them" if len(missing) > 1 else "it"
        raise ServeError(
            f"mtkit serve needs {' and '.join(missing)}; install {them} with: {INSTALL_HINT}"
        )
