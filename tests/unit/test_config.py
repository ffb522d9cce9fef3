"""Config loading, overrides and every kind of config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtkit.config.load import apply_overrides, config_from_dict, dump_config, load_config
from mtkit.config.schema import ConfigError, ExperimentConfig

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_valid() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.d_model % cfg.model.n_heads == 0


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "configs" / name)
    assert cfg.name


def test_yaml_values_and_override_land(tmp_path: Path) -> None:
    path = write(
        tmp_path, "name: x\ndata:\n  train: d/train\nmodel:\n  d_model: 64\n  n_heads: 2\n"
    )
    cfg = load_config(path, ["model.encoder_layers=5", "training.lr=3e-4", "data.valid=null"])
    assert cfg.model.d_model == 64
    assert cfg.model.encoder_layers == 5
    assert cfg.training.lr == pytest.approx(3e-4)
    assert cfg.data.valid is None


def test_int_widens_to_float_and_tuple_from_list(tmp_path: Path) -> None:
    cfg = load_config(None, ["training.lr=1", "training.betas=[0.8, 0.9]"])
    assert isinstance(cfg.training.lr, float)
    assert cfg.training.betas == (0.8, 0.9)


def test_unknown_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  d_modle: 64\n")
    expected = r"unknown key 'model.d_modle'.*did you mean 'model.d_model'"
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        load_config(write(tmp_path, "modle:\n  d_model: 64\n"))


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match="training.lrr"):
        load_config(None, ["training.lrr=0.1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.lr=fast", "training.lr: expected a number, got 'fast'"),
        ("model.d_model=64.5", "model.d_model: expected an integer"),
        ("model.share_embeddings=3", "model.share_embeddings: expected true/false"),
        ("model.norm=middle", "model.norm: expected 'pre' | 'post'"),
        ("model.d_model=true", "model.d_model: expected an integer"),
        ("training.betas=[0.9]", "training.betas: expected a list of 2 values"),
        ("data.train=5", "data.train: expected a string"),
    ],
)
def test_wrong_types(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.d_model=250", "model.d_model"),  # not divisible by 4 heads
        ("model.n_heads=0", "model.n_heads"),
        ("training.max_tokens=-1", "training.max_tokens"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.word_dropout=1.0", "model.word_dropout"),
        ("training.label_smoothing=-0.1", "training.label_smoothing"),
        ("tokenizer.vocab_size=8", "tokenizer.vocab_size"),
        ("decoding.beam_size=0", "decoding.beam_size"),
        ("data.tgt_lang=en", "data.tgt_lang"),
        ("data.max_len=5000", "data.max_len"),
    ],
)
def test_impossible_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        load_config(None, [override])


def test_share_embeddings_needs_joint_vocab() -> None:
    with pytest.raises(ConfigError, match="model.share_embeddings"):
        load_config(None, ["tokenizer.joint=false"])
    cfg = load_config(None, ["tokenizer.joint=false", "model.share_embeddings=false"])
    assert not cfg.tokenizer.joint


def test_bidirectional_needs_a_joint_vocabulary_and_no_source_tags(tmp_path: Path) -> None:
    separate = ["tokenizer.joint=false", "model.share_embeddings=false", "data.bidirectional=true"]
    with pytest.raises(ConfigError, match=r"^data.bidirectional: needs tokenizer.joint: true"):
        load_config(None, separate)
    tagged = "data:\n  bidirectional: true\n  train: [data/train, {path: bt/mono, tag: <BT>}]\n"
    with pytest.raises(ConfigError, match="data.bidirectional: cannot be combined with a tagged"):
        load_config(write(tmp_path, tagged))
    untagged = "data:\n  bidirectional: true\n  train: [data/train, {path: bt/mono, weight: 2}]\n"
    assert load_config(write(tmp_path, untagged)).data.bidirectional


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  d_model: 64\n  n_heads: [2\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: line \d+"):
        load_config(path)


def test_python_object_tag_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["model.d_model"])


def test_override_into_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_dump_round_trips() -> None:
    import yaml

    cfg = load_config(None, ["model.d_model=128", "training.betas=[0.8, 0.95]"])
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
