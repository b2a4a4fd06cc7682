"""Tokenizers: char and byte-level BPE, one interface, saved and read back as JSON."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanolens.corpora.sentiment import generate_corpus
from nanolens.models.tokenizers import TOKENIZERS, BPETokenizer, CharTokenizer, UnknownCharactersError, build_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def corpus_text():
    return generate_corpus(60_000, seed=0).text


@pytest.fixture(scope="module")
def bpe(corpus_text):
    return BPETokenizer.train(corpus_text, 400)


# ------------------------------------------------------------------------------ char


def test_char_round_trip_and_sorted_vocab():
    tok = CharTokenizer.from_text("hello world\n")
    assert tok.kind == "char" and tok.chars == sorted(set("hello world\n"))
    assert tok.decode(tok.encode("low hell\n")) == "low hell\n"
    assert [tok.id_to_str(i) for i in tok.encode("he")] == ["h", "e"]


def test_char_unknown_characters_error_names_them():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(UnknownCharactersError) as err:
        tok.encode("a bad Zebra!")
    msg = str(err.value)
    assert "['!', 'Z', 'd', 'e', 'r']" in msg and "unknown=' '" in msg


def test_char_unknown_replacement():
    tok = CharTokenizer.from_text("abc ", unknown=" ")
    assert tok.decode(tok.encode("a?c!")) == "a c "
    with pytest.raises(ValueError, match="replacement character '#' is not in the vocabulary"):
        CharTokenizer.from_text("abc", unknown="#")


def test_char_save_load_round_trip(tmp_path):
    tok = CharTokenizer.from_text("héllo wörld 👋\n", unknown=" ")
    tok.save(tmp_path / "tokenizer.json")
    back = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(back, CharTokenizer) and back.to_dict() == tok.to_dict()
    assert back.encode("wö👋?") == tok.encode("wö👋?")


# ------------------------------------------------------------------------------ BPE


def test_bpe_trains_to_the_requested_size_and_compresses(bpe, corpus_text):
    assert bpe.kind == "bpe" and bpe.vocab_size == 400
    ids = bpe.encode(corpus_text)
    assert len(ids) < len(corpus_text) / 2 and max(ids) < bpe.vocab_size
    assert bpe.decode(ids) == corpus_text


def test_bpe_has_no_unknown_characters(bpe):
    text = "Ünïcødé 👋 世界\r\n\ttabs, ~^`|{}\x00 and CRLF\r\n"
    assert bpe.decode(bpe.encode(text)) == text
    assert bpe.unknown is None


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_bpe_round_trip_any_string(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_id_to_str(bpe):
    ids = bpe.encode("The sky was bright")
    assert "".join(bpe.id_to_str(i) for i in ids) == "The sky was bright"
    assert len(ids) < len("The sky was bright")


def test_bpe_save_load_round_trip(bpe, tmp_path, corpus_text):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["kind"] == "bpe" and saved["tokenizer"]["model"]["type"] == "BPE"
    back = load_tokenizer(path)
    assert isinstance(back, BPETokenizer) and back.vocab_size == bpe.vocab_size
    assert back.encode(corpus_text[:5000]) == bpe.encode(corpus_text[:5000])
    assert back.to_dict() == bpe.to_dict()
    assert BPETokenizer.from_dict(bpe.to_dict()).encode("hi 👋") == bpe.encode("hi 👋")


def test_bpe_small_corpus_stops_early():
    tok = BPETokenizer.train("aaa bbb aaa", 5000)
    assert 256 <= tok.vocab_size < 5000
    assert tok.decode(tok.encode("abc")) == "abc"


def test_bpe_bad_arguments(bpe):
    with pytest.raises(ValueError, match=r"vocab_size for byte-level BPE must be an integer >= 256"):
        BPETokenizer.train("some text", 100)
    with pytest.raises(ValueError, match="empty text"):
        BPETokenizer.train("", 300)
    with pytest.raises(ValueError, match="out of range for a vocabulary of 400"):
        bpe.decode([1, 400])


# ------------------------------------------------------------------------------ registry and builder


def test_registry_and_build_tokenizer(corpus_text):
    assert TOKENIZERS == {"char": CharTokenizer, "bpe": BPETokenizer}
    char = build_tokenizer("char", corpus_text)
    assert isinstance(char, CharTokenizer) and char.vocab_size == len(set(corpus_text))
    assert build_tokenizer("char", "abc", unknown="a").unknown == "a"
    bpe = build_tokenizer("bpe", corpus_text[:20_000], vocab_size=300)
    assert isinstance(bpe, BPETokenizer) and bpe.vocab_size == 300
    with pytest.raises(ValueError, match=r"unknown tokenizer kind 'wordpiece'; known kinds: char, bpe"):
        build_tokenizer("wordpiece", corpus_text)
    with pytest.raises(ValueError, match="drop vocab_size"):
        build_tokenizer("char", corpus_text, vocab_size=100)
    with pytest.raises(ValueError, match="no unknown characters"):
        build_tokenizer("bpe", corpus_text, unknown=" ")


def test_build_bpe_default_vocab(corpus_text):
    assert build_tokenizer("bpe", corpus_text).vocab_size == 1024


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file at"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="is not a nanolens tokenizer file"):
        load_tokenizer(bad)
    bad.write_text(json.dumps({"kind": "sentencepiece"}), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown tokenizer kind 'sentencepiece'; known kinds: char, bpe"):
        load_tokenizer(bad)


def test_model_checkpoint_keeps_a_bpe_tokenizer(bpe, tmp_path, make_model):
    model = make_model(tokenizer=bpe)
    model.save(tmp_path / "ckpt")
    back = type(model).load(tmp_path / "ckpt")
    assert isinstance(back.tokenizer, BPETokenizer)
    assert back.to_tokens("The sky").tolist() == model.to_tokens("The sky").tolist()
