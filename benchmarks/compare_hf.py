"""mtkit against its Hugging Face Transformers export: logits, greedy and beam outputs, BLEU.

    .venv/bin/python benchmarks/compare_hf.py runs/demo data/test.en --lines 200
    .venv/bin/python benchmarks/compare_hf.py runs/demo data/test.en --ref data/test.de

The run is exported (`mtkit export --format huggingface`) into a temporary folder and loaded
back with `from_pretrained`, offline. On the first `--lines` source lines it reports the largest
|logit difference| (teacher forcing on mtkit's greedy outputs), then for greedy search and for
beam search how many outputs `generate()` makes token for token like mtkit's search. generate()
gets mtkit's per-sentence max length (sentences grouped by it, `max_new_tokens` per group).
Beam search runs twice: with the run's own length normalisation (what generation_config.json
carries; GNMT has no exact Transformers equivalent) and with `average`, which Transformers'
length_penalty=1.0 computes exactly. With `--ref`, BLEU of both sides too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `mtkit` importable
    sys.path.insert(0, str(REPO))

from mtkit.config.schema import DecodingConfig  # noqa: E402
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID  # noqa: E402


def hf_search(
    model: Any,
    tokenizer: Any,
    lines: Sequence[str],
    options: DecodingConfig,
    max_positions: int,
    batch_size: int = 32,
) -> list[list[int]]:
    """Output ids (no start token, EOS or padding) of `model.generate()` for each line, with
    mtkit's `options` and per-sentence max length; a blank line gives [].

    mtkit's limit, int(a * src_len + b) tokens and then EOS at its own log-probability, is a
    `prefix_allowed_tokens_fn` that allows only EOS from there (generation_config's
    `forced_eos_token_id` would score that EOS 0 instead, so it is switched off).
    """
    import torch

    from mtkit.export.huggingface import generation_settings
    from mtkit.translation.ctranslate2_engine import max_length

    settings = {**generation_settings(options, max_positions), "forced_eos_token_id": None}
    everything = torch.arange(model.get_output_embeddings().weight.size(0))  # (tgt_vocab,)
    only_eos = torch.tensor([EOS_ID])
    keep = sorted((i for i, line in enumerate(lines) if line.strip()), key=lambda i: len(lines[i]))
    out: list[list[int]] = [[] for _ in lines]
    for start in range(0, len(keep), batch_size):
        index = keep[start : start + batch_size]
        batch = tokenizer([lines[i].strip() for i in index], return_tensors="pt",
                          padding=True, truncation=True)  # fmt: skip
        src_lens = batch["attention_mask"].sum(dim=1).tolist()  # EOS included, as in mtkit
        limits = [max_length(int(n), options, max_positions) for n in src_lens]

        def allowed(row: int, prefix: Any, limits: list[int] = limits) -> Any:
            return only_eos if prefix.numel() - 1 >= limits[row] else everything

        with torch.inference_mode():
            settings["max_new_tokens"] = max(limits) + 1  # `limit` tokens, then EOS
            generated = model.generate(**batch, **settings, prefix_allowed_tokens_fn=allowed)
        for i, row in zip(index, generated[:, 1:].tolist(), strict=True):
            out[i] = row[: row.index(EOS_ID)] if EOS_ID in row else row
    return out


def mtkit_search(translator: Any, lines: Sequence[str], options: DecodingConfig) -> list[list[int]]:
    """mtkit's output ids for each line (what `mtkit translate` decodes); blank lines give []."""
    from mtkit.translation.translator import translate_nbest

    keep = [i for i, line in enumerate(lines) if line.strip()]
    limit = translator.config.model.max_positions - 1
    pieces = translator.tokenizers.src.encode([lines[i].strip() for i in keep])
    src = [[*ids[:limit], EOS_ID] for ids in pieces]
    found = translate_nbest(translator.model, src, options, translator.device)
    out: list[list[int]] = [[] for _ in lines]
    for i, decoded in zip(keep, found, strict=True):
        out[i] = decoded.hyps[0].tokens
    return out


def max_logit_diff(
    ours: Any, theirs: Any, sources: list[list[int]], targets: list[list[int]], batch: int = 32
) -> float:
    """Largest |logit difference| over every real target position (teacher forcing)."""
    import torch

    from mtkit.data.batching import pad
    from mtkit.model.masks import pad_mask

    worst = 0.0
    with torch.inference_mode():
        for start in range(0, len(sources), batch):
            src = pad(sources[start : start + batch])  # (batch, src_len)
            tgt_rows = [[BOS_ID, *t] for t in targets[start : start + batch]]
            tgt = pad(tgt_rows)  # (batch, tgt_len)
            a = ours(src, pad_mask(src, PAD_ID), tgt)  # (batch, tgt_len, vocab)
            mask = (src != PAD_ID).long()  # (batch, src_len)
            b = theirs(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
            real = tgt != PAD_ID  # (batch, tgt_len)
            worst = max(worst, float((a - b).abs()[real].max()))
    return worst


def compare(run: Path, source: Path, lines: int, beam: int, ref: Path | None) -> dict[str, Any]:
    """The report: logits, identical outputs per search, BLEU (with `ref`)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from mtkit.evaluation.metrics import corpus_bleu
    from mtkit.export.huggingface import export_huggingface
    from mtkit.translation.translator import Translator

    text = source.read_text(encoding="utf-8").splitlines()[:lines]
    refs = ref.read_text(encoding="utf-8").splitlines()[: len(text)] if ref else None
    translator = Translator.load(run, device="cpu")
    with tempfile.TemporaryDirectory(prefix="compare_hf_") as tmp:
        folder = export_huggingface(run, Path(tmp) / "hf")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    max_positions = translator.config.model.max_positions
    run_options = dataclasses.replace(translator.config.decoding, beam_size=beam)
    searches = {
        "greedy": dataclasses.replace(run_options, beam_size=1, no_repeat_ngram=0),
        f"beam {beam}, {run_options.length_norm}": run_options,
        f"beam {beam}, average": dataclasses.replace(run_options, length_norm="average"),
    }
    report: dict[str, Any] = {"run": str(run), "source": str(source), "lines": len(text)}
    tgt = translator.tokenizers.tgt
    for name, options in searches.items():
        ours = mtkit_search(translator, text, options)
        theirs = hf_search(model, tokenizer, text, options, max_positions)
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        entry: dict[str, Any] = {"identical": same, "rate": same / max(1, len(text))}
        if refs is not None:
            entry["bleu_mtkit"] = corpus_bleu(tgt.decode(ours), refs)
            entry["bleu_hf"] = corpus_bleu(
                tokenizer.batch_decode(theirs, skip_special_tokens=True), refs
            )
        report[name] = entry
        if name == "greedy":
            src = [[*ids, EOS_ID] for ids in translator.tokenizers.src.encode(text)]
            report["max_logit_diff"] = max_logit_diff(translator.model, model, src, ours)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="run directory or checkpoint")
    parser.add_argument("source", type=Path, help="source text, one sentence per line")
    parser.add_argument("--lines", type=int, default=200, help="first N lines of the source")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--ref", type=Path, default=None, help="reference translations")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(json.dumps(compare(args.run, args.source, args.lines, args.beam, args.ref), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
