"""Corpora: files and folders, tiny Shakespeare (never from the network here), the sentiment stories."""

import hashlib
import re
import string
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from nanolens.corpora import sentiment
from nanolens.corpora import shakespeare as data
from nanolens.corpora import CorpusError, load_corpus, shakespeare_path
from nanolens.corpora.sentiment import LABELS, LEXICON, NEGATIVE_WORDS, POSITIVE_WORDS, generate_corpus, generate_story, is_held_out, neutral_openings, pronoun_gender, score_sentiment, story_prefix_to_decision, story_prefix_to_reveal

SHARED_SHAKESPEARE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare.txt"
needs_shakespeare = pytest.mark.skipif(
    not SHARED_SHAKESPEARE.is_file(),
    reason=f"tiny Shakespeare is not at {SHARED_SHAKESPEARE} (../shared/data beside the repository)",
)
WORD = re.compile(r"[a-z]+")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real cache, no NANOLENS_DATA, and any download attempt fails loudly (no network in tests)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("NANOLENS_DATA", raising=False)

    def no_network(url, timeout):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(data, "_download", no_network)


@pytest.fixture(scope="module")
def big():
    return generate_corpus()  # the default, about 1 MB


def words(text):
    return WORD.findall(text.lower())


# ------------------------------------------------------------------------------ sentiment stories


def test_generation_is_deterministic_given_seed():
    a, b = generate_corpus(30_000, seed=3), generate_corpus(30_000, seed=3)
    assert a.text == b.text and a.stories == b.stories
    assert generate_corpus(30_000, seed=4).text != a.text
    assert generate_story("negative", 7) == generate_story("negative", 7)


def test_default_size_is_about_one_megabyte(big):
    assert 1_000_000 <= len(big.text) < 1_002_000
    assert big.name == "sentiment" and big.labels == ("positive", "negative")
    assert len(big.stories) > 2000


@pytest.mark.parametrize("size", [2_000, 50_000, 200_000])
def test_size_roughly_as_requested(size):
    corpus = generate_corpus(size, seed=1)
    longest = max(len(s) for s in corpus.stories)
    assert size <= len(corpus.text) <= size + longest + 3


def test_labels_balanced(big):
    counts = Counter(s.label for s in big.stories)
    assert set(counts) == {"positive", "negative"}
    assert abs(counts["positive"] - counts["negative"]) <= 1
    three = generate_corpus(60_000, seed=2, labels=LABELS)
    counts3 = Counter(s.label for s in three.stories)
    assert set(counts3) == set(LABELS) and max(counts3.values()) - min(counts3.values()) <= 1


def test_spans_cover_the_text_exactly(big):
    text = big.text
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert [big.story_text(i) for i in range(len(big.stories))] == text[:-1].split("\n\n")
    assert big.stories[0].start == 0
    for prev, nxt in zip(big.stories, big.stories[1:]):
        assert text[prev.end : nxt.start] == "\n\n"
    for i, s in enumerate(big.stories[:500]):
        story = big.story_text(i)
        assert "\n" not in story
        assert s.decision - s.start == story_prefix_to_decision(story)
        assert s.reveal - s.start == story_prefix_to_reveal(story)
        assert s.start < s.decision < s.reveal < s.end


def test_opening_is_neutral_and_label_shows_from_the_next_sentence_to_the_end(big):
    for i, s in enumerate(big.stories):
        opening = big.text[s.start : s.decision]
        assert not set(words(opening)) & (POSITIVE_WORDS | NEGATIVE_WORDS), opening
        assert not is_held_out(opening)
        reveal = big.text[s.decision : s.reveal]
        own = POSITIVE_WORDS if s.label == "positive" else NEGATIVE_WORDS
        assert set(words(reveal)) & own, reveal
        # the last sentences still carry the label (sentiment all the way through)
        last = big.story_text(i).rsplit(". ", 1)[-1]
        assert set(words(last)) & own, last


def test_plain_ascii_small_vocabulary(big):
    allowed = set(string.ascii_letters + string.digits + " \n.,!?\"'")
    assert set(big.text) <= allowed
    assert len(set(big.text)) < 70


def test_neutral_class_has_no_sentiment_words():
    corpus = generate_corpus(40_000, seed=5, labels=LABELS)
    for i, s in enumerate(corpus.stories):
        if s.label == "neutral":
            assert score_sentiment(corpus.story_text(i)) == 0.0
            assert not set(words(corpus.story_text(i))) & (POSITIVE_WORDS | NEGATIVE_WORDS)


def test_lexicon_fillers_carry_their_label():
    for slot, by_label in LEXICON.items():
        for label, fillers in by_label.items():
            for filler in fillers:
                ws = set(words(filler))
                if label == "positive":
                    assert ws & POSITIVE_WORDS and not ws & NEGATIVE_WORDS, (slot, filler)
                elif label == "negative":
                    assert ws & NEGATIVE_WORDS and not ws & POSITIVE_WORDS, (slot, filler)
                else:
                    assert not ws & (POSITIVE_WORDS | NEGATIVE_WORDS), (slot, filler)


def test_score_sentiment_sign_matches_labels(big):
    right = sum(
        (score_sentiment(big.story_text(i)) > 0) == (s.label == "positive") for i, s in enumerate(big.stories)
    )
    assert right / len(big.stories) > 0.95


def test_score_sentiment_values():
    assert score_sentiment("") == 0.0
    assert score_sentiment("The bus comes at 5.") == 0.0
    assert score_sentiment("A HAPPY, happy day!") == 1.0
    assert score_sentiment("sad and cold") == -1.0
    assert score_sentiment("happy but sad and cold") == pytest.approx(-1 / 3)
    assert score_sentiment("unhappy") == -1.0  # whole words only: 'unhappy' is not 'happy'
    assert -1.0 <= score_sentiment(generate_story("positive", 1) + " " + generate_story("negative", 2)) <= 1.0


def test_neutral_openings_are_held_out_neutral_and_deterministic(big):
    openings = neutral_openings(300, seed=0)
    assert len(openings) == len(set(openings)) == 300
    assert openings == neutral_openings(300, seed=0)
    assert openings != neutral_openings(300, seed=1)
    for opening in openings:
        assert is_held_out(opening)
        assert opening not in big.text, opening
        assert score_sentiment(opening) == 0.0
        assert opening.endswith(".") and story_prefix_to_decision(opening) == len(opening)
    assert neutral_openings(0) == []


def test_gender_pairs_change_only_the_hero():
    from nanolens.corpora import gender_pairs

    women, men = gender_pairs(40, seed=3)
    assert len(women) == len(men) == 40 and (women, men) == gender_pairs(40, seed=3)
    assert [score_sentiment(w) > 0 for w in women] == [i % 2 == 0 for i in range(40)]  # labels alternate
    for w, m in zip(women, men):
        hero = lambda t: re.search(r", ([A-Z][a-z]+) ", t).group(1)  # noqa: E731  (the opening names the hero)
        assert hero(w) in sentiment.FEMALE and hero(m) in sentiment.MALE
        assert score_sentiment(w) == score_sentiment(m)
        # the same story: equal once names and pronouns are masked
        mask = lambda t: re.sub(r"\b(she|he|her|him|his|[A-Z][a-z]+)\b", "_", t)  # noqa: E731
        assert mask(w) == mask(m)
    short_women, _ = gender_pairs(3, seed=3, max_chars=50)
    assert short_women == [w[-50:] for w in women[:3]]
    with pytest.raises(CorpusError, match="unknown name"):
        generate_story("positive", 0, hero="Zed")


def test_pronoun_gender():
    assert pronoun_gender("Then she smiled at him.") == 1.0
    assert pronoun_gender("His dog barked; she laughed.") == -1.0
    assert pronoun_gender("The sky was grey.") == 0.0
    assert pronoun_gender("There were others.") == 0.0  # 'her' inside a word does not count


def test_story_prefix_helpers_reject_non_stories():
    with pytest.raises(ValueError, match="first sentence"):
        story_prefix_to_decision("no sentence here")
    with pytest.raises(ValueError, match="second sentence"):
        story_prefix_to_reveal("Just one.")


def test_bad_generator_arguments():
    with pytest.raises(CorpusError, match="unknown story labels.*joyous"):
        generate_corpus(1000, labels=("positive", "joyous"))
    with pytest.raises(CorpusError, match="positive number"):
        generate_corpus(0)
    with pytest.raises(CorpusError, match="unknown story labels"):
        generate_story("happy")


def test_load_corpus_sentiment_matches_generator():
    corpus = load_corpus("sentiment", size=20_000, seed=9)
    assert corpus.text == generate_corpus(20_000, seed=9).text and corpus.stories
    assert corpus.opening(0) == corpus.text[: corpus.stories[0].decision]
    assert len(corpus.stories_with("positive")) + len(corpus.stories_with("negative")) == len(corpus.stories)
    with pytest.raises(CorpusError, match="positive number"):
        load_corpus("sentiment", size=-5)


# ------------------------------------------------------------------------------ files and folders


def test_load_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes("\ufeffline one\r\nline two\r\n".encode("utf-8"))
    corpus = load_corpus(f)
    assert corpus.text == "line one\nline two\n" and corpus.name == "notes.txt" and not corpus.stories
    assert load_corpus(str(f), size=4).text == "line"


def test_load_folder_sorted_and_blank_line_separated(tmp_path):
    (tmp_path / "b.txt").write_text("second\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third\n\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("not text", encoding="utf-8")
    corpus = load_corpus(tmp_path)
    assert corpus.text == "first\n\nsecond\n\nthird\n"
    assert [Path(d.path).name for d in corpus.documents] == ["a.txt", "b.txt", "c.txt"]
    assert [corpus.text[d.start : d.end] for d in corpus.documents] == ["first", "second", "third"]


def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match=r"no such file or folder: .*nowhere\.txt; check the path"):
        load_corpus(tmp_path / "nowhere.txt")
    with pytest.raises(CorpusError, match="no such file or folder"):
        load_corpus("some/dir/that/is/not/here")


def test_unknown_corpus_name():
    with pytest.raises(CorpusError, match=r"unknown corpus 'shakespear'.*'sentiment', 'shakespeare'.*path"):
        load_corpus("shakespear")


def test_empty_file(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"empty\.txt is empty; give a file with some text"):
        load_corpus(f)
    f.write_text(" \n\n\t", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"is empty \(only whitespace\)"):
        load_corpus(f)


def test_folder_without_text(tmp_path):
    (tmp_path / "readme.md").write_text("hello", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"holds no \.txt files; put the training text in files ending in \.txt"):
        load_corpus(tmp_path)
    (tmp_path / "a.txt").write_text("", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"every \.txt file in .* is empty \(2 files\); add some text"):
        load_corpus(tmp_path)


def test_non_utf8_file_names_file_and_offset(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError) as err:
        load_corpus(f)
    msg = str(err.value)
    assert str(f) in msg and "byte 0xe9 at byte offset 3" in msg and "Re-encode the file as UTF-8" in msg
    assert "iconv" in msg
    # in a folder, the message names the bad file
    (tmp_path / "good.txt").write_text("fine", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"latin\.txt is not valid UTF-8"):
        load_corpus(tmp_path)


def test_bad_size(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("text", encoding="utf-8")
    with pytest.raises(CorpusError, match="positive number"):
        load_corpus(f, size=0)


# ------------------------------------------------------------------------------ tiny Shakespeare


@needs_shakespeare
def test_explicit_path_file_and_folder(tmp_path):
    assert shakespeare_path(SHARED_SHAKESPEARE) == SHARED_SHAKESPEARE
    assert shakespeare_path(SHARED_SHAKESPEARE.parent) == SHARED_SHAKESPEARE
    (tmp_path / "input.txt").write_text("ROMEO:\n", encoding="utf-8")
    assert shakespeare_path(tmp_path) == tmp_path / "input.txt"
    with pytest.raises(CorpusError, match="no tiny Shakespeare at .*tinyshakespeare.txt or input.txt"):
        shakespeare_path(tmp_path / "missing")


@needs_shakespeare
def test_env_var_file_or_folder(monkeypatch):
    monkeypatch.setenv("NANOLENS_DATA", str(SHARED_SHAKESPEARE))
    assert shakespeare_path() == SHARED_SHAKESPEARE
    monkeypatch.setenv("NANOLENS_DATA", str(SHARED_SHAKESPEARE.parent))
    assert shakespeare_path() == SHARED_SHAKESPEARE
    corpus = load_corpus("shakespeare")
    assert corpus.name == "shakespeare" and len(corpus.text) == data.SHAKESPEARE_CHARS
    assert corpus.text.startswith("First Citizen:")
    assert len(load_corpus("shakespeare", size=1000).text) == 1000


@needs_shakespeare
def test_download_into_cache_verifies_and_writes_atomically(monkeypatch, tmp_path):
    payload = SHARED_SHAKESPEARE.read_bytes()
    calls = []

    def fake_download(url, timeout):
        calls.append((url, timeout))
        return payload

    monkeypatch.setattr(data, "_download", fake_download)
    path = shakespeare_path()
    assert path == tmp_path / "xdg-cache" / "nanolens" / "tinyshakespeare.txt"
    assert calls == [(data.SHAKESPEARE_URL, data.DOWNLOAD_TIMEOUT_S)] and 0 < data.DOWNLOAD_TIMEOUT_S <= 30
    assert hashlib.sha256(path.read_bytes()).hexdigest() == data.SHAKESPEARE_SHA256
    assert sorted(p.name for p in path.parent.iterdir()) == ["tinyshakespeare.txt"]  # no temp files left
    # the cache is used from now on: no second download
    monkeypatch.setattr(data, "_download", lambda url, timeout: pytest.fail("downloaded twice"))
    assert shakespeare_path() == path
    assert len(load_corpus("shakespeare").text) == 1_115_394


def test_cache_dir_honours_xdg_and_home(monkeypatch, tmp_path):
    assert data.cache_dir() == tmp_path / "xdg-cache" / "nanolens"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "nanolens"


def test_offline_error_says_how_to_supply_the_file(monkeypatch, tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data, "_download", offline)
    monkeypatch.setenv("NANOLENS_DATA", str(tmp_path / "data-dir"))
    (tmp_path / "data-dir").mkdir()
    with pytest.raises(CorpusError) as err:
        load_corpus("shakespeare")
    msg = str(err.value)
    cache_file = tmp_path / "xdg-cache" / "nanolens" / "tinyshakespeare.txt"
    assert "could not download" in msg and "are you offline?" in msg and "name resolution" in msg
    assert "pass its path" in msg and "NANOLENS_DATA" in msg and str(cache_file) in msg
    assert "data-dir holds neither tinyshakespeare.txt nor input.txt" in msg
    assert not cache_file.exists()
    with pytest.raises(CorpusError, match="not on this machine.*NANOLENS_DATA"):
        shakespeare_path(download=False)


def test_timeout_is_an_offline_error(monkeypatch):
    def slow(url, timeout):
        raise TimeoutError("timed out")

    monkeypatch.setattr(data, "_download", slow)
    with pytest.raises(CorpusError, match="timed out.*NANOLENS_DATA"):
        shakespeare_path()


def test_checksum_mismatch_saves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "_download", lambda url, timeout: b"<html>captive portal</html>")
    with pytest.raises(CorpusError) as err:
        shakespeare_path()
    msg = str(err.value)
    assert "sha256" in msg and data.SHAKESPEARE_SHA256 in msg and "Nothing was saved" in msg
    assert "NANOLENS_DATA" in msg
    cache = tmp_path / "xdg-cache" / "nanolens"
    assert not cache.exists() or not any(cache.iterdir())


def test_module_constants_match_shared_readme():
    readme = SHARED_SHAKESPEARE.parent / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} is absent")
    assert data.SHAKESPEARE_SHA256 in readme.read_text(encoding="utf-8")
    assert sentiment.DEFAULT_SIZE == 1_000_000
