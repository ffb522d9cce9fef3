"""The experiment config: one dataclass per YAML section, one comment per field.

Each field's comment (the comment lines right above it, then the one at the end of its line)
is its documentation: scripts/gen_config_doc.py turns them into docs/config.md.
Loading and overrides live in load.py, type conversion in convert.py, value checks in
validate.py. No torch import here: `mtkit --help` and config errors stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mtkit.errors import UsageError


class ConfigError(UsageError):
    """A config problem the user must fix; the message names the file/key and what was expected."""


@dataclass
class CorpusConfig:
    """One corpus of `data.train` as a mapping (a plain path: the same without options)."""

    path: str = ""  # what a plain `data.train` entry holds: a text prefix, a file or a hub name
    # prepended to every source sentence of this corpus (one piece of a trained tokenizer), e.g.
    # "<BT>" for back-translated pairs (tagged back-translation); null: none
    tag: str | None = None
    weight: float = 1.0  # sampling weight: 2 takes every pair twice, 0.5 a seeded half


@dataclass
class DataConfig:
    """Where the parallel text lives and how it is cleaned."""

    src_lang: str = "en"  # source language code; also the file suffix for `format: text`
    tgt_lang: str = "de"  # target language code
    # text: a pair of line-aligned files per split; tsv/csv/jsonl/parquet: one file per split;
    # hub: a Hugging Face hub dataset
    format: Literal["text", "tsv", "csv", "jsonl", "parquet", "hub"] = "text"
    # text: a path prefix, read as PREFIX.src_lang / PREFIX.tgt_lang. Other formats: a file path.
    # hub: "NAME" or "NAME:SPLIT" (split defaults to train / validation / test).
    # A list: several corpora, concatenated. An entry may be a mapping {path, tag, weight}: tag
    # is prepended to its source sentences, weight up- or down-samples it (see docs/training.md).
    train: str | CorpusConfig | list[str | CorpusConfig] = "data/train"
    valid: str | None = "data/valid"  # None: carve `valid_size` pairs out of train
    test: str | None = "data/test"  # None: no test split (unless test_size/test_fraction carve one)
    valid_size: int = 1000  # pairs carved from train when `valid` is None
    prepared_dir: str = "prepared/demo"  # where the cleaned, encoded dataset is saved
    max_len: int = 100  # drop pairs with more tokens than this on either side
    max_ratio: float = 3.0  # drop pairs whose token-length ratio exceeds this
    num_proc: int = 1  # processes for datasets.map (encoding)
    # Columns for tsv/csv/jsonl/parquet/hub. tsv/csv: an int is a 0-based column and there is no
    # header; a name means the first row is a header. None: columns 0/1 for tsv/csv; for the
    # others the src_lang/tgt_lang keys, or a hub-style {"translation": {src_lang: .., ..}}.
    src_column: int | str | None = None
    tgt_column: int | str | None = None  # the target column, same rules as `src_column`
    hub_config: str | None = None  # config name of a hub dataset (e.g. "de-en" for wmt14)
    valid_fraction: float = 0.0  # > 0: carve this share of train instead of valid_size pairs
    test_size: int = 0  # pairs carved from train as the test split when `test` is None
    test_fraction: float = 0.0  # > 0: carve this share of train as test instead of test_size
    seed: int = 1234  # shuffles carved splits; a fixed seed gives the same splits every time
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"  # NFKC also folds compatibility chars
    normalize_whitespace: bool = True  # collapse runs of whitespace (tabs, \r, NBSP) to one space
    dedup: bool = True  # drop exact duplicate (src, tgt) pairs from train
    drop_same: bool = False  # drop train pairs whose source equals the target (untranslated)
    # Also filter valid/test by length/ratio/duplicates/same. False keeps them whole so scores
    # compare with other systems (over-long ids are truncated instead).
    clean_eval: bool = False
    strict: bool = False  # invalid UTF-8 or NUL bytes are fatal instead of skipped + counted
    # A row that does not have the shape of its format: a tsv/csv line with another number of
    # columns than the header (or the first line) has, e.g. a tab inside a field; a jsonl line
    # that is not a JSON object or lacks the source/target key. error: prepare fails, naming
    # them (file:line); skip: they are dropped and counted as `bad_row`.
    on_bad_row: Literal["error", "skip"] = "error"
    # Train on every pair in both directions (bidirectional training, Ding et al. 2021): each
    # training pair is added reversed, target -> source, after the tokenizer is trained (so it
    # is the one-direction tokenizer). Needs a joint vocabulary. For the first part of training,
    # then fine-tune without it (`--init-from RUN/last.pt --keep-optimizer --keep-schedule`).
    bidirectional: bool = False

    def train_entries(self) -> list[str | CorpusConfig]:
        """`train` as a list of corpora (a single value is a list of one)."""
        return self.train if isinstance(self.train, list) else [self.train]


@dataclass
class TokenizerConfig:
    """sentencepiece settings, trained on the training split only."""

    type: Literal["bpe", "unigram"] = "bpe"  # sentencepiece model type
    vocab_size: int = 8000  # per model; for a joint model, the shared vocabulary
    joint: bool = True  # one model for both languages (allows shared embeddings)
    character_coverage: float = 1.0  # 0.9995 for languages with large alphabets (ja, zh)
    byte_fallback: bool = False  # spell unknown characters as bytes instead of <unk>
    input_sentence_size: int = 1_000_000  # sample at most this many sentences to train
    # Subword regularisation of the training data (valid/test stay deterministic): each epoch,
    # the training text is re-segmented at random and the epoch's batches are planned on the
    # sampled lengths. bpe: BPE-dropout
    # (Provilkov et al. 2020), the probability of skipping each merge, 0.1 typical, below 1.
    # unigram: sampling from all segmentations (Kudo 2018) with p ~ P(x)^alpha, 0.1-0.5 typical
    # (smaller = more varied). Does not change the prepared data.
    sampling_alpha: float = 0.0  # 0 = off (the one deterministic segmentation)
    # Reuse a tokenizer instead of training one: a .model file (joint), or a folder holding
    # spm.model, or spm.src.model + spm.tgt.model (written by `mtkit tokenizer train`, a prepared
    # dir, a run dir). prepare copies it byte for byte; the keys above are then not used, except
    # `joint`, which must say what the folder holds.
    model: str | None = None


@dataclass
class ModelConfig:
    """Encoder-decoder Transformer size and wiring (defaults: a small 'base-like' model)."""

    d_model: int = 256  # width of every residual stream
    n_heads: int = 4  # attention heads; d_model must be divisible by it
    encoder_layers: int = 3  # encoder layers
    decoder_layers: int = 3  # decoder layers
    d_ff: int = 1024  # hidden width of the position-wise feed-forward block
    dropout: float = 0.1  # on embeddings and residual branches
    attention_dropout: float = 0.0  # on attention probabilities
    activation_dropout: float = 0.0  # after the feed-forward activation
    word_dropout: float = 0.0  # whole input tokens (source and target) while training
    activation: Literal["relu", "gelu"] = "relu"  # the feed-forward block's activation
    norm: Literal["pre", "post"] = "pre"  # pre-norm trains stably without long warm-up
    share_embeddings: bool = True  # one embedding table for source and target (joint vocab only)
    tie_output: bool = True  # output projection shares the target embedding matrix
    max_positions: int = 1024  # longest sequence the positional table covers


@dataclass
class TrainingConfig:
    """Optimisation, schedule and bookkeeping."""

    seed: int = 1234  # initial weights, data order, dropout
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA if present, else CPU
    # auto: bfloat16 autocast where the hardware runs it natively fast (CUDA with bf16; CPUs
    # with AVX512-BF16 or AMX whose bf16 matmul probes >= 1.5x fp32), else float32.
    # float16 (autocast + gradient scaler) needs CUDA.
    precision: Precision = "auto"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    max_tokens: int = 4096  # token budget per batch (source + target, padding included)
    max_steps: int = 10000  # optimizer updates; the run stops here
    max_epochs: int = 0  # 0 means no epoch limit
    # wall-clock limit in minutes for the whole run: the time before a --resume counts too;
    # 0 means none
    max_time: float = 0.0
    lr: float = 5e-4  # peak learning rate, reached at the end of warm-up
    warmup_steps: int = 1000  # updates of linear warm-up from 0 to `lr`
    # After warm-up: inverse_sqrt decays as 1/sqrt(step) (the Transformer paper); cosine and
    # linear decay to `min_lr` at max_steps; constant stays at `lr`.
    schedule: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "inverse_sqrt"
    min_lr: float = 0.0  # cosine/linear end here at max_steps; after warm-up lr stays above it
    accumulate: int = 1  # micro-batches per update: the update sees max_tokens * accumulate tokens
    betas: tuple[float, float] = (0.9, 0.98)  # Adam betas
    adam_eps: float = 1e-9  # Adam epsilon
    weight_decay: float = 0.0  # decoupled weight decay (AdamW when > 0)
    clip_norm: float = 1.0  # gradient-norm clipping; 0 disables
    label_smoothing: float = 0.1  # label smoothing of the cross-entropy
    log_every: int = 50  # steps between progress lines
    valid_every: int = 500  # steps between validations
    valid_bleu_sentences: int = 200  # dev sentences greedily decoded for validation BLEU
    save_every: int = 0  # updates between checkpoints; 0 = at every validation
    keep_last: int = 5  # step_NNNNNN.pt files kept (oldest deleted); last.pt/best.pt always kept
    best_metric: Literal["bleu", "chrf", "loss"] = "bleu"  # picks best.pt and drives patience
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    max_bad_steps: int = 5  # NaN/inf updates are skipped; this many in a row stops training
    compile: bool = False  # torch.compile the model (faster on GPUs; slow first steps)
    # R-Drop (Liang et al. 2021): every batch runs twice (concatenated with itself, so with two
    # dropout masks); loss = mean of the two cross-entropies + rdrop_alpha / 4 * (KL(p1|p2) +
    # KL(p2|p1)) over target tokens: the paper's alpha (5 in its IWSLT runs) with fairseq's
    # normalisation. Each update costs about twice the compute and activation memory.
    rdrop_alpha: float = 0.0  # 0 = off; needs model dropout > 0 to do anything
    # Start from another run: its weights and its tokenizer(s), byte for byte (none is trained).
    # A run directory (its best.pt, else last.pt) or a checkpoint file. Model keys left out of
    # this config come from the parent's; shape keys given must agree (`--init-from` on the CLI).
    init_from: str | None = None
    init_keep_optimizer: bool = False  # with init_from: also take the parent's Adam moments
    # with init_from: continue the parent's step count, so the lr schedule (warm-up included)
    # goes on where it stopped and max_steps counts the parent's updates too; false: start at 0
    init_keep_schedule: bool = False


LengthNorm = Literal["gnmt", "average", "none"]
EarlyStopping = Literal["exact", "heuristic"]
Precision = Literal["auto", "float32", "bfloat16", "float16"]
AttentionKernel = Literal["auto", "native", "torch"]


@dataclass
class DecodingConfig:
    """Inference defaults; every key can be overridden on the translate/evaluate command line.

    This one object travels from the YAML (or a checkpoint) and the CLI flags to the searches;
    `validate_decoding` checks it once.
    """

    beam_size: int = 5  # 1 means greedy search
    length_penalty: float = 1.0  # GNMT alpha: score / ((5 + len) / 6) ** alpha; 0 = raw log-prob
    # How beam search ranks finished hypotheses of different lengths (len counts EOS):
    # gnmt: log_prob / ((5 + len) / 6) ** length_penalty; average: log_prob / len (per-token
    # mean); none: raw log_prob, which favours short outputs.
    length_norm: LengthNorm = "gnmt"
    # When beam search stops a sentence that has its n-best finished hypotheses: exact, once no
    # live hypothesis could still enter the list at any length up to the maximum (the same
    # result as searching on); heuristic, once the best live one, scored as if it ended now,
    # cannot (Hugging Face's early_stopping=False): fewer steps, a few outputs differ.
    early_stopping: EarlyStopping = "exact"
    max_len_a: float = 1.5  # max output length = a * source length + b
    max_len_b: int = 10  # see `max_len_a`
    min_len: int = 0  # EOS is forbidden before this many output tokens
    no_repeat_ngram: int = 0  # > 0: beam search never repeats an n-gram of this size
    nbest: int = 1  # hypotheses per sentence (at most beam_size; samples when sampling)
    sampling: bool = False  # sample instead of searching (e.g. for back-translation)
    temperature: float = 1.0  # sampling: < 1 sharpens, > 1 flattens the distribution
    top_k: int = 0  # sampling: keep only the k most probable tokens; 0 keeps all
    top_p: float = 1.0  # sampling: keep the smallest set of tokens with this much mass
    seed: int = 1234  # sampling: the same seed and input give the same samples
    max_tokens: int = 4000  # source-token budget per translation batch
    # translate/evaluate (--precision): auto picks bfloat16 autocast as `training.precision`
    # does (fast on CUDA and on CPUs with native bf16), else float32; float16 needs CUDA.
    precision: Precision = "auto"
    # The attention and the vocabulary log-softmax of decoding steps on CPU: native is mtkit's C
    # kernels (built once per machine with its C compiler, checked against PyTorch), torch is
    # PyTorch's; auto takes native where they build, else torch. Outputs agree to float rounding.
    attention_kernel: AttentionKernel = "auto"


@dataclass
class EvaluationConfig:
    """How BLEU is computed, in validation during training and by `mtkit evaluate`."""

    # sacreBLEU tokenizer for BLEU: 13a (sacreBLEU's default, for detokenized text), intl, char,
    # zh, ...; none scores text that is already tokenized (the papers' tokenized Multi30k). Also
    # the default of `mtkit evaluate --tokenize` for this run; the signature shows it (tok:none).
    tokenize: str = "13a"  # an unknown name fails when training or evaluation starts


@dataclass
class ExperimentConfig:
    """One experiment: the whole YAML file."""

    # a plain name (no '/' or '..'): the run directory is runs/<name> unless run_dir is set
    name: str = "experiment"
    run_dir: str | None = None  # where checkpoints, logs and metrics go; None means runs/<name>
    data: DataConfig = field(default_factory=DataConfig)  # input files and cleaning
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)  # sentencepiece
    model: ModelConfig = field(default_factory=ModelConfig)  # the Transformer's shape
    training: TrainingConfig = field(default_factory=TrainingConfig)  # optimisation
    decoding: DecodingConfig = field(default_factory=DecodingConfig)  # search defaults
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)  # BLEU's tokenizer

    @property
    def run_path(self) -> Path:
        """Directory holding checkpoints, logs, metrics and the resolved config."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name
