"""The model card (README.md) of a Hugging Face export: data, model, training, scores, use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtkit.config.schema import ExperimentConfig
from mtkit.evaluation.metrics import corpus_scores
from mtkit.files import read_lines


@dataclass
class CardFacts:
    """What the card states, gathered by the exporter."""

    cfg: ExperimentConfig
    architecture: str  # the Transformers class, e.g. "MarianMTModel"
    checkpoint: Path
    train_state: dict[str, Any]  # the checkpoint's step/epoch/best_score counters (may be {})
    parameters: int
    vocab: tuple[int, int]  # source, target pieces
    generation: dict[str, Any]  # generation_config.json
    logits_diff: float  # max |logit difference| to mtkit on the export's probe batch
    versions: dict[str, str]  # mtkit, transformers


def validation_record(metrics: Path, step: int | None) -> dict[str, Any] | None:
    """The metrics.jsonl validation line at `step`, else the run's best one, else None."""
    if not metrics.is_file():
        return None
    records = []
    for line in read_lines(metrics, "metrics file"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: the others still count
            continue
        if isinstance(record, dict) and record.get("kind") == "valid":
            records.append(record)
    at_step = [r for r in records if r.get("step") == step]
    best = [r for r in records if r.get("best")]
    found = at_step or best
    return found[-1] if found else None


def bleu_signature() -> str:
    """The sacreBLEU signature of mtkit's validation BLEU (one reference, 13a, cased)."""
    return corpus_scores(["x"], [["x"]], ("bleu",))[0].signature


def model_card(facts: CardFacts) -> str:
    """README.md text: YAML front matter for the Hub, then the sections."""
    cfg = facts.cfg
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang
    front = [
        "---", f"language:\n- {src}\n- {tgt}", "library_name: transformers",
        "pipeline_tag: translation", f"tags:\n- translation\n- mtkit\n- {facts.architecture}",
        "---", "",
        f"# {cfg.name}: {src} → {tgt} translation", "",
        f"A Transformer trained with mtkit {facts.versions['mtkit']} "
        f"and exported as Hugging Face Transformers `{facts.architecture}` (the class that "
        f"computes exactly what mtkit's {cfg.model.norm}-norm Transformer computes).", "",
    ]  # fmt: skip
    sections = [_usage(), _data(cfg), _model(facts), _training(facts), _scores(facts)]
    return "\n".join(front + sections + [_decoding(facts), _equivalence(facts)])


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def _usage() -> str:
    return "\n".join([
        "## Use", "",
        "```python",
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")',
        'model = AutoModelForSeq2SeqLM.from_pretrained("THIS_FOLDER")',
        'batch = tokenizer(["A sentence to translate."], return_tensors="pt", padding=True)',
        "print(tokenizer.batch_decode(model.generate(**batch), skip_special_tokens=True))",
        "```", "",
        'With transformers 4.x, `pipeline("translation", model="THIS_FOLDER")` works too '
        "(transformers 5 removed the translation pipeline). The tokenizer is "
        "`MarianTokenizer` over mtkit's own sentencepiece model(s) (`source.spm`, "
        "`target.spm`), so it needs the `sentencepiece` package; it appends `</s>` to each "
        "source, as mtkit does.", "",
    ])  # fmt: skip


def _data(cfg: ExperimentConfig) -> str:
    d, t = cfg.data, cfg.tokenizer
    entries = d.train if isinstance(d.train, list) else [d.train]
    paths = [
        e if isinstance(e, str) else e.path + (f" (tag {e.tag})" if e.tag else "") for e in entries
    ]
    train = ", ".join(f"`{p}`" for p in paths)
    rows = [
        ("languages", f"{d.src_lang} → {d.tgt_lang}"),
        ("training data", f"{train} ({d.format})"),
        ("validation data", f"`{d.valid}`" if d.valid else "carved from the training data"),
        ("test data", f"`{d.test}`" if d.test else "none"),
        ("max sentence length", f"{d.max_len} tokens (longer pairs dropped)"),
        ("tokenizer", f"sentencepiece {t.type}, {t.vocab_size} pieces, "
                      f"{'joint' if t.joint else 'separate'} vocabulary"),
    ]  # fmt: skip
    return "## Data\n\n" + _table(rows)


def _model(facts: CardFacts) -> str:
    m = facts.cfg.model
    rows = [
        ("architecture", f"{m.norm}-norm encoder-decoder Transformer → `{facts.architecture}`"),
        ("layers", f"{m.encoder_layers} encoder, {m.decoder_layers} decoder"),
        ("d_model / heads / d_ff", f"{m.d_model} / {m.n_heads} / {m.d_ff}"),
        ("activation", m.activation),
        ("embeddings", f"{'shared' if m.share_embeddings else 'separate'} source/target, "
                       f"output layer {'tied to' if m.tie_output else 'separate from'} them"),
        ("positions", f"sinusoidal, up to {m.max_positions}"),
        ("vocabulary", f"{facts.vocab[0]} source / {facts.vocab[1]} target pieces"),
        ("parameters", f"{facts.parameters:,}"),
    ]  # fmt: skip
    return "## Model\n\n" + _table(rows)


def _training(facts: CardFacts) -> str:
    t, s = facts.cfg.training, facts.train_state
    rows = [
        ("checkpoint", f"`{facts.checkpoint.name}`"
                       + (f" (update {s['step']}, epoch {s.get('epoch', 0) + 1})"
                          if "step" in s else "")),
        ("updates", f"max_steps {t.max_steps}, batches of {t.max_tokens} tokens "
                    f"× {t.accumulate} accumulated"),
        ("optimiser", f"Adam (betas {tuple(t.betas)}, eps {t.adam_eps}), lr {t.lr}, "
                      f"{t.schedule} schedule with {t.warmup_steps} warm-up updates"),
        ("regularisation", f"dropout {facts.cfg.model.dropout}, label smoothing "
                           f"{t.label_smoothing}, weight decay {t.weight_decay}"),
        ("precision", t.precision),
    ]  # fmt: skip
    return "## Training\n\n" + _table(rows)


def _scores(facts: CardFacts) -> str:
    t, step = facts.cfg.training, facts.train_state.get("step")
    record = validation_record(facts.checkpoint.parent / "metrics.jsonl", step)
    if record is None:
        return "## Validation\n\nNo validation scores were found next to the checkpoint.\n"
    where = "this checkpoint" if record.get("step") == step else "the run's best checkpoint"
    scores = ", ".join(f"{name} {record[name]:.2f}" for name in ("bleu", "chrf") if name in record)
    return "\n".join([
        "## Validation", "",
        f"At update {record.get('step')} ({where}): {scores or 'no BLEU'}; loss "
        f"{record.get('loss', float('nan')):.3f}. Greedy search on the first "
        f"{t.valid_bleu_sentences} validation sentences, detokenised, scored with sacreBLEU "
        f"(signature `{bleu_signature()}`).", "",
    ])  # fmt: skip


def _decoding(facts: CardFacts) -> str:
    d, g = facts.cfg.decoding, facts.generation
    search = f"beam {d.beam_size}" if d.beam_size > 1 else "greedy search"
    return "\n".join([
        "## Decoding", "",
        f"mtkit's defaults for this run: {search}, length penalty {d.length_penalty} "
        f"({d.length_norm}), max length {d.max_len_a} × source length + {d.max_len_b} tokens. "
        f"`generation_config.json` carries them as far as Transformers can: num_beams "
        f"{g['num_beams']}, length_penalty {g['length_penalty']}, early_stopping "
        f"{g['early_stopping']!r}, max_new_tokens {g['max_new_tokens']}, `</s>` forced at the "
        "limit, `<pad>` and `<s>` never generated.", "",
        "Transformers ranks finished beams by log-prob / length ** length_penalty: mtkit's "
        "`average` (1.0) and `none` (0.0) exactly; GNMT's ((5 + length) / 6) ** alpha has no "
        "equivalent (the exporter writes the exponent with the same slope at 15 tokens). "
        "mtkit's max length is per sentence; to get it, and mtkit's own score for the `</s>` "
        "that ends a sentence at its limit, pass:", "",
        "```python",
        f"limits = [min(int({d.max_len_a} * n + {d.max_len_b}), "
        f"{facts.cfg.model.max_positions - 1}) for n in batch['attention_mask'].sum(1).tolist()]",
        f"anything = list(range({facts.vocab[1]}))",
        "allowed = lambda i, prefix: [3] if len(prefix) > limits[i] else anything",
        "model.generate(**batch, max_new_tokens=max(limits) + 1, forced_eos_token_id=None,",
        "               prefix_allowed_tokens_fn=allowed)",
        "```", "",
    ])  # fmt: skip


def _equivalence(facts: CardFacts) -> str:
    return "\n".join([
        "## Equivalence with mtkit", "",
        f"The exporter compared the logits of this model with mtkit's on a probe batch: "
        f"largest difference {facts.logits_diff:.2e}. Exported with mtkit "
        f"{facts.versions['mtkit']} and transformers {facts.versions['transformers']}.", "",
    ])  # fmt: skip
