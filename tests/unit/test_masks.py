import torch

from mtkit.model.masks import causal_mask, pad_mask


def test_pad_mask_shape_and_polarity() -> None:
    ids = torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])
    mask = pad_mask(ids, pad_id=0)
    assert mask.dtype == torch.bool
    assert mask.shape == (2, 4)
    assert mask.tolist() == [[True, True, False, False], [True, False, False, False]]


def test_pad_mask_uses_given_pad_id() -> None:
    ids = torch.tensor([[1, 0, 1]])
    assert pad_mask(ids, pad_id=1).tolist() == [[False, True, False]]


def test_causal_mask_lower_triangle() -> None:
    mask = causal_mask(3, torch.device("cpu"))
    assert mask.dtype == torch.bool
    assert mask.shape == (3, 3)
    assert mask.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
