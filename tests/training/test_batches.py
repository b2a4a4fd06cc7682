"""TokenData: compact token arrays, the train/val split, random windows, save/load, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nanolens.models import CharTokenizer
from nanolens.training.batches import DataError, TokenData, token_dtype

TEXT = "abcdefghij" * 20  # 200 characters, 10 distinct


@pytest.fixture
def data() -> TokenData:
    return TokenData.from_text(TEXT, CharTokenizer.from_text(TEXT))


def test_dtype_is_compact():
    assert token_dtype(65) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.int32
    big = TokenData.from_ids(np.arange(100) * 1000, vocab_size=100_000)
    assert big.train.dtype == np.int32 and big.val.dtype == np.int32


def test_split_is_90_10_and_keeps_order(data):
    assert data.train.dtype == np.uint16
    assert (data.n_train, data.n_val) == (180, 20) and len(data) == 200
    ids = CharTokenizer.from_text(TEXT).encode(TEXT)
    assert np.array_equal(np.concatenate([data.train, data.val]), ids)
    quarter = TokenData.from_text(TEXT, CharTokenizer.from_text(TEXT), val_fraction=0.25)
    assert (quarter.n_train, quarter.n_val) == (150, 50)


def test_get_batch_windows_are_shifted_by_one(data):
    gen = torch.Generator().manual_seed(0)
    x, y = data.get_batch("train", batch_size=5, block_size=8, generator=gen)
    assert x.shape == y.shape == (5, 8) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    train = torch.from_numpy(data.train.astype(np.int64))
    for row_x, row_y in zip(x, y):  # every row is a real window of the train split
        starts = [i for i in range(len(train) - 8) if torch.equal(train[i : i + 8], row_x)]
        assert any(torch.equal(train[i + 1 : i + 9], row_y) for i in starts)
    again = data.get_batch("train", 5, 8, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    xv, yv = data.get_batch("val", 3, 19, torch.Generator().manual_seed(1))  # the whole val split fits once
    assert torch.equal(xv[0], torch.from_numpy(data.val[:19].astype(np.int64)))


def test_save_and_load_memmap(data, tmp_path):
    data.meta["corpus"] = "letters"
    data.save(tmp_path / "tokens")
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == ["meta.json", "train.bin", "val.bin"]
    loaded = TokenData.load(tmp_path / "tokens")
    assert isinstance(loaded.train, np.memmap) and loaded.train.dtype == np.uint16
    assert np.array_equal(loaded.train, data.train) and np.array_equal(loaded.val, data.val)
    assert loaded.vocab_size == data.vocab_size and loaded.meta["corpus"] == "letters"
    raw = np.memmap(tmp_path / "tokens" / "val.bin", dtype=np.uint16, mode="r")  # plain nanoGPT-style file
    assert np.array_equal(raw, data.val)
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(loaded.get_batch("train", 2, 4, gen)[0], data.get_batch("train", 2, 4, torch.Generator().manual_seed(3))[0])
    in_memory = TokenData.load(tmp_path / "tokens", mmap=False)
    assert not isinstance(in_memory.train, np.memmap)


def test_load_errors(data, tmp_path):
    with pytest.raises(DataError, match="missing"):
        TokenData.load(tmp_path)
    data.save(tmp_path / "t")
    with open(tmp_path / "t" / "train.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(DataError, match="truncated"):
        TokenData.load(tmp_path / "t")
    data.save(tmp_path / "u")
    (tmp_path / "u" / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid"):
        TokenData.load(tmp_path / "u")


def test_empty_text_is_a_clear_error():
    with pytest.raises(DataError, match="empty"):
        TokenData.from_text("", CharTokenizer("ab"))
    with pytest.raises(DataError, match="empty"):
        TokenData.from_ids([], vocab_size=5)


def test_block_size_larger_than_val_split(data):
    with pytest.raises(DataError) as err:
        data.check_block_size(32)
    message = str(err.value)
    assert "block_size 32 is larger than the val split of 20 tokens" in message
    assert "lower block_size or val_fraction, or give more text" in message
    with pytest.raises(DataError, match="val split of 20 tokens"):
        data.get_batch("val", 2, 32)
    data.check_block_size(19)  # 20 tokens hold one window of 19 + 1


def test_bad_arguments():
    with pytest.raises(DataError, match="val_fraction"):
        TokenData.from_ids([1, 2, 3], vocab_size=5, val_fraction=0.0)
    with pytest.raises(DataError, match="outside"):
        TokenData.from_ids([1, 2, 9], vocab_size=5)
    with pytest.raises(ValueError, match="unknown split"):
        TokenData.from_ids(list(range(5)) * 4, vocab_size=5).split("test")


def test_meta_records_tokenizer(tmp_path):
    data = TokenData.from_text(TEXT, CharTokenizer.from_text(TEXT), meta={"data": "letters.txt"})
    data.save(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["meta"] == {"tokenizer": "char", "data": "letters.txt", "val_fraction": 0.1}
    assert (meta["n_train"], meta["n_val"], meta["dtype"]) == (180, 20, "uint16")
