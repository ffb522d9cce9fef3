"""mtkit vs JoeyNMT 2.3 on the same model size, batches, threads and process (CPU).

    pip download joeynmt==2.3.0 --no-deps -d /tmp/joey && unzip /tmp/joey/*.whl -d /tmp/joeypkg
    pip install --target /tmp/joeydeps importlib_metadata subword-nmt sacremoses
    PYTHONPATH=/tmp/joeypkg:/tmp/joeydeps .venv/bin/python benchmarks/compare_joeynmt.py

(JoeyNMT's own requirements pin protobuf<3.21 and pull tensorboard, pylint, ...; only its
model, loss and search are needed here, and tensorboard is stubbed out.)

Both toolkits build a pre-norm Transformer of bench.py's size (d_model 256, 3+3 layers, 4 heads,
FFN 1024, tied joint vocabulary of 8000, dropout 0.1, label smoothing 0.1) and alternate
update by update on the same token-budget batches of Multi30k, each with fused Adam and
gradient clipping at 1.0: the difference is the model and loss code. Decoding uses random
weights with the EOS embedding zeroed in both models (EOS then never wins), so every sentence
runs to exactly `--length` tokens in both: same work, no dependence on when a random model
stops. JoeyNMT's Transformer search has no key/value cache (each step re-runs the decoder over
the whole prefix), so mtkit is shown with and without its cache. Figures are medians (min-max)
of per-repetition ratios, measured back to back.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_common import (  # noqa: E402
    MAX_TOKENS,
    MODEL,
    VOCAB,
    endless_batches,
    meta,
    prepared_data,
    setup_torch,
    summary,
)
from benchmarks.bench_decode_sections import decode_run  # noqa: E402
from benchmarks.bench_train_sections import make_stepper  # noqa: E402


def joey_modules() -> Any:
    """joeynmt's model/search/vocabulary modules, or a clear exit when it is not importable."""
    stub = types.ModuleType("torch.utils.tensorboard")
    stub.SummaryWriter = object  # type: ignore[attr-defined]
    sys.modules.setdefault("torch.utils.tensorboard", stub)  # joeynmt.helpers imports it
    try:
        import joeynmt  # type: ignore[import-not-found, unused-ignore]
        from joeynmt import model, search, vocabulary
    except ImportError as e:
        raise SystemExit(
            f"compare_joeynmt: cannot import joeynmt ({e}); see the docstring"
        ) from None
    return types.SimpleNamespace(
        version=getattr(joeynmt, "__version__", "?"), model=model, search=search,
        vocabulary=vocabulary,
    )  # fmt: skip


def joey_model_config() -> dict[str, Any]:
    """JoeyNMT's `model:` section for bench.py's model (pre-norm, tied joint embeddings)."""
    side = {
        "type": "transformer", "num_layers": MODEL["encoder_layers"],
        "num_heads": MODEL["n_heads"], "hidden_size": MODEL["d_model"],
        "ff_size": MODEL["d_ff"], "dropout": 0.1, "layer_norm": "pre",
        "embeddings": {"embedding_dim": MODEL["d_model"], "scale": True},
    }  # fmt: skip
    return {
        "encoder": copy.deepcopy(side), "decoder": copy.deepcopy(side), "tied_embeddings": True,
        "tied_softmax": True, "initializer": "xavier_uniform",
    }  # fmt: skip


def build_joey(joey: Any, vocab_size: int) -> Any:
    """JoeyNMT Transformer of the benchmark size (its specials: unk 0, pad 1, bos 2, eos 3)."""
    specials = types.SimpleNamespace(
        unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_id=0, pad_id=1, bos_id=2, eos_id=3, sep_token=None, lang_tags=[],
    )  # fmt: skip
    vocab = joey.vocabulary.Vocabulary([f"t{i}" for i in range(vocab_size - 4)], specials)
    m = joey.model.build_model(joey_model_config(), src_vocab=vocab, trg_vocab=vocab)
    m.loss_function = ("crossentropy", 0.1)
    return m


def to_joey_ids(ids: Any) -> Any:
    """mtkit ids (pad 0, unk 1) -> JoeyNMT ids (unk 0, pad 1); bos 2 and eos 3 agree."""
    import torch

    return torch.where(ids == 0, 1, torch.where(ids == 1, 0, ids))


def joey_update(m: Any, opt: Any, batch: Any) -> None:
    import torch

    src, trg_in, trg = (to_joey_ids(t) for t in (batch.src, batch.tgt_in, batch.tgt_out))
    m.train()
    loss = m(
        return_type="loss", src=src, trg=trg, trg_input=trg_in,
        src_mask=(src != 1).unsqueeze(1), src_length=batch.src_mask.sum(1),
        trg_mask=(trg != 1).unsqueeze(1),
    )[0]  # fmt: skip
    (loss / max(batch.n_tgt_tokens, 1)).backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def compare_training(args: argparse.Namespace, joey: Any) -> dict[str, Any]:
    import torch

    from mtkit.training.update import update

    encoded, cfg = prepared_data(args)
    torch.manual_seed(0)
    ours = make_stepper(args, cfg, torch.device("cpu"))
    theirs = build_joey(joey, VOCAB)
    opt = torch.optim.Adam(theirs.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
    it = endless_batches(encoded["train"], args.max_tokens, 1)
    for _ in range(args.warmup_steps):
        batch = next(it)
        update(ours, [batch], 5e-4, lambda: False)
        joey_update(theirs, opt, batch)
    rates: dict[str, list[float]] = {"mtkit": [], "joeynmt": [], "ratio": []}
    for _ in range(args.repeats):
        t_ours = t_joey = 0.0
        tokens = 0
        for _ in range(args.train_steps):
            batch = next(it)
            t = time.perf_counter()
            update(ours, [batch], 5e-4, lambda: False)
            t1 = time.perf_counter()
            joey_update(theirs, opt, batch)
            t_ours, t_joey = t_ours + t1 - t, t_joey + time.perf_counter() - t1
            tokens += batch.n_src_tokens + batch.n_tgt_tokens
        rates["mtkit"].append(tokens / t_ours)
        rates["joeynmt"].append(tokens / t_joey)
        rates["ratio"].append(t_joey / t_ours)
    return {k: summary(v) for k, v in rates.items()}


def joey_decode(joey: Any, model: Any, batches: list[Any], beam: int, length: int) -> None:
    """JoeyNMT's greedy (beam 1) or beam search over padded batches of mtkit ids."""
    import torch

    from mtkit.model.masks import pad_mask

    with torch.no_grad():
        for src in batches:
            jsrc = to_joey_ids(src)
            mask = (jsrc != 1).unsqueeze(1)
            enc, hid, _, _ = model(
                return_type="encode", src=jsrc, src_length=pad_mask(src, 0).sum(1),
                src_mask=mask,
            )  # fmt: skip
            if beam == 1:
                joey.search.greedy(mask, length, model, enc, hid)
            else:
                joey.search.beam_search(model, beam, enc, hid, mask, length, 1.0)


def compare_decoding(args: argparse.Namespace, joey: Any) -> dict[str, Any]:
    import torch

    from mtkit.data.batching import pad, token_batches
    from mtkit.model.transformer import build_model

    encoded, cfg = prepared_data(args)
    torch.manual_seed(0)
    ours = build_model(cfg, VOCAB, VOCAB).eval()
    theirs = build_joey(joey, VOCAB).eval()
    with torch.no_grad():  # EOS (id 3 in both) never wins: every output has --length tokens
        ours.tgt_embed.weight[3].zero_()
        theirs.trg_embed.lut.weight[3].zero_()
    src_all = [list(s) for s in encoded["test"]["src_ids"]][: args.sentences]
    batches = [
        pad([src_all[i] for i in index])
        for index in token_batches([len(s) for s in src_all], args.decode_max_tokens)
    ]

    def run_ours(beam: int, cache: bool) -> None:
        decode_run(
            ours, src_all, beam=beam, use_cache=cache, max_tokens=args.decode_max_tokens,
            device=torch.device("cpu"), forced=args.length,
        )  # fmt: skip

    def run_joey(beam: int) -> None:
        joey_decode(joey, theirs, batches, beam, args.length)

    out: dict[str, Any] = {}
    n_tokens = len(src_all) * args.length
    for name, beam in (("greedy", 1), ("beam5", 5)):
        run_ours(beam, True)  # warm-up
        run_joey(beam)
        runs: list[tuple[str, Callable[[], None]]] = [
            ("mtkit", functools.partial(run_ours, beam, True)),
            ("mtkit_uncached", functools.partial(run_ours, beam, False)),
            ("joeynmt", functools.partial(run_joey, beam)),
        ]
        times: dict[str, list[float]] = {key: [] for key, _ in runs}
        for _ in range(args.repeats):
            for key, fn in runs:
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
        out[name] = {
            f"{k}_tokens_per_s": summary([n_tokens / t for t in v]) for k, v in times.items()
        }
        out[name]["joeynmt_over_mtkit_time"] = summary(
            [j / m for j, m in zip(times["joeynmt"], times["mtkit"], strict=True)]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache-dir", type=Path, default=REPO / "bench_results")
    p.add_argument("--out", type=Path, default=REPO / "bench_results" / "joeynmt.json")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--length", type=int, default=20, help="forced output length")
    p.add_argument("--decode-max-tokens", type=int, default=4000)
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    args = p.parse_args(argv)
    args.device, args.precision, args.compile, args.system_malloc = "cpu", "float32", False, False
    args.quick = False
    setup_torch(args)
    joey = joey_modules()
    result = {
        "meta": {"joeynmt": joey.version, **meta(args)},
        "train": compare_training(args, joey),
        "decode": compare_decoding(args, joey),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    t, d = result["train"], result["decode"]
    print(f"JoeyNMT {joey.version} vs mtkit, {result['meta']['threads']} threads, median (min-max)")
    print(f"train tokens/s     mtkit {t['mtkit']['median']:,.0f}  "
          f"joeynmt {t['joeynmt']['median']:,.0f}  joeynmt/mtkit time {t['ratio']['median']:.2f} "
          f"({t['ratio']['min']:.2f}-{t['ratio']['max']:.2f})")  # fmt: skip
    for name in ("greedy", "beam5"):
        e = d[name]
        print(f"{name:6s} tokens/s  mtkit {e['mtkit_tokens_per_s']['median']:,.0f}  "
              f"mtkit uncached {e['mtkit_uncached_tokens_per_s']['median']:,.0f}  "
              f"joeynmt {e['joeynmt_tokens_per_s']['median']:,.0f}  joeynmt/mtkit time "
              f"{e['joeynmt_over_mtkit_time']['median']:.2f}")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
