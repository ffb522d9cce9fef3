"""`data.bidirectional`: the training split followed by each of its pairs reversed.

Bidirectional training (Ding et al., 2021, "Improving Neural Machine Translation by
Bidirectional Training") trains the first part of a run on src -> tgt and tgt -> src pairs
together, with one joint vocabulary and no direction tag, then fine-tunes on src -> tgt alone.
The reversed pairs are added after the tokenizer is trained (it sees each sentence once, as
without the option) and before encoding (length and ratio filters see both directions).
"""

from __future__ import annotations

import logging

import datasets

logger = logging.getLogger(__name__)


def add_reversed_pairs(train: datasets.Dataset) -> datasets.Dataset:
    """`train`, then its rows with source and target swapped (2 x rows, same columns).

    The config check makes the vocabulary joint (`tokenizer.joint`, which a reused tokenizer
    must match), so a reversed pair is encoded by the same model on both sides.
    """
    swapped = train.rename_columns({"src": "tgt", "tgt": "src"}).select_columns(train.column_names)
    logger.info(
        "data.bidirectional: %d training pairs and the same pairs reversed (target -> source)",
        len(train),
    )
    return datasets.concatenate_datasets([train, swapped])
