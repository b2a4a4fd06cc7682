"""The embedded default corpus: short procedural stories whose hidden label governs every word.

Each story opens with one *neutral* sentence (a time, a person, a journey, a place; nothing
about the label), and from the second sentence on, the label (``positive`` or ``negative``,
optionally ``neutral``) picks the words of every sentence: the weather, the mood, how the
companion greets the hero, what happens, the food, what people say, how the day ends. A
char-level model that wants to predict the adjective in the fifth sentence must remember the
sentiment of the first ones, so the label is a real, learnable feature of its residual stream.

    corpus = generate_corpus(20_000, seed=0)
    story = corpus.stories[0]
    story.label, corpus.text[story.start:story.decision]   # label, its neutral opening
    score_sentiment(corpus.story_text(0))                   # +1 or -1 by construction

Openings are split by a hash into a training part and a *held-out* part: `neutral_openings`
returns held-out ones only, which never appear in a generated corpus, so steering prompts are
new to the model. `score_sentiment` counts the words of `POSITIVE_WORDS` / `NEGATIVE_WORDS`
(every sentiment-bearing phrase of the generator holds at least one of them), to score a
model's continuations. The text is plain ASCII: letters, digits, space, newline and
``. , ! ? "`` (a char vocabulary of about 60).
"""

from __future__ import annotations

import random
import re
import zlib
from typing import Sequence

from .corpus import Corpus, CorpusError, Story

LABELS = ("positive", "negative", "neutral")
DEFAULT_LABELS = ("positive", "negative")
DEFAULT_SIZE = 1_000_000
SEPARATOR = "\n\n"
HOLDOUT_MOD = 8  # an opening is held out when crc32(opening) % HOLDOUT_MOD == 0 (1 in 8)

# --------------------------------------------------------------------------- the sentiment lexicon

POSITIVE_WORDS: frozenset[str] = frozenset("""
happy glad cheerful delighted joyful hopeful proud grateful excited content relaxed calm
bright sunny warm clear golden lovely beautiful charming peaceful lively cozy wonderful
smiled warmly laughed joy happily friendly hug kind cheered
won prize shiny rainbow free perfect
delicious fresh sweet tasty
love great fun beautifully
helpful funny patient smile praised good
pleasantly gently merrily peacefully soft gentle
smiling laughing full thankful excited lucky loved
splendid best
""".split())

NEGATIVE_WORDS: frozenset[str] = frozenset("""
sad gloomy worried upset miserable anxious lonely nervous angry bitter afraid unhappy
grey cold dark stormy bleak dirty noisy dreary ugly awful shabby
frowned sighed rudely ignored shouted angrily disgust complained
lost missed broke tripped hurt soaked dropped mud scolded tore
stale burnt sour soggy tasteless
terrible hate wrong tired horrible
rude bad unfair yelled pushed
wearily painfully miserably terribly sadly harsh icy
crying tears frowning anger regretting hopeless alone headache
dreadful rotten worst
""".split())

assert not POSITIVE_WORDS & NEGATIVE_WORDS

_WORD = re.compile(r"[a-z]+")


def score_sentiment(text: str) -> float:
    """(positive - negative) / (positive + negative) word counts, in [-1, 1]; 0 when neither occurs.

    Words are lower-cased runs of letters, matched against `POSITIVE_WORDS` / `NEGATIVE_WORDS`.
    """
    pos = neg = 0
    for word in _WORD.findall(text.lower()):
        if word in POSITIVE_WORDS:
            pos += 1
        elif word in NEGATIVE_WORDS:
            neg += 1
    return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


# --------------------------------------------------------------------------- the cast and the world

FEMALE = ("Mara", "Lena", "Ada", "Rosa", "Nina", "Ella", "Ivy", "Lucy", "Clara", "Maya",
          "Iris", "Tessa", "Nora", "Olive", "Ruth", "Greta", "Sofia", "Hana")
MALE = ("Tom", "Sam", "Leo", "Max", "Finn", "Owen", "Hugo", "Jack", "Eli", "Otto",
        "Ben", "Theo", "Felix", "Jonah", "Ravi", "Omar", "Karl", "Milo")
_PRONOUNS = {"f": ("she", "her", "her"), "m": ("he", "him", "his")}  # subject, object, possessive
PEOPLE = tuple((n, "f") for n in FEMALE) + tuple((n, "m") for n in MALE)

TIMES = ("One morning", "On Monday", "On a Tuesday afternoon", "Early on Saturday", "One evening",
         "At noon", "Last spring", "On a quiet Sunday", "In the autumn", "After breakfast",
         "Before dinner", "At 9 in the morning", "At 4 in the afternoon", "On the first day of May",
         "Late on Friday", "One winter day", "In the summer", "On Thursday")
TRAVEL = ("walked", "went", "drove", "cycled", "took the bus", "took the train", "rode a bike")
PLACES = ("market", "harbor", "library", "old mill", "park", "museum", "bakery", "train station",
          "beach", "village fair", "river", "town square", "bookshop", "zoo", "forest", "lake",
          "cinema", "post office", "farm", "lighthouse", "castle", "garden", "school", "city hall")
RELATIVES = ("sister", "brother", "grandmother", "grandfather", "uncle", "aunt", "cousin", "dog")
PURPOSES = ("", "", " with {C}", " with {C}", " to meet {C}", " with {ps} {rel}",
            " to visit {ps} {rel}", " after lunch", " before work", " for the first time")
ROLES = ("baker", "fisherman", "teacher", "guard", "musician", "neighbor", "shopkeeper",
         "stranger", "farmer", "painter", "waiter", "ticket seller")
LANDMARKS = ("bridge", "fountain", "church", "bus stop", "playground", "row of shops", "field of sheep",
             "canal", "tower", "pond")
ROLE_LOOKS = ("old", "young", "tall", "short")
FOODS = ("apple pie", "loaf of bread", "bowl of soup", "cheese sandwich", "pot of tea",
         "plate of fish", "bag of cherries", "lemon cake", "basket of plums")

# Every label-dependent slot: label -> fillers. Placeholders: {o}/{ps} the subject's object and
# possessive pronouns. Positive and negative fillers each hold at least one word of their list.
LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "mood": {
        "positive": ("happy", "glad", "cheerful", "delighted", "joyful", "hopeful", "proud",
                     "grateful", "excited", "content", "relaxed", "calm"),
        "negative": ("sad", "gloomy", "worried", "upset", "miserable", "anxious", "lonely",
                     "nervous", "angry", "bitter", "afraid", "unhappy"),
        "neutral": ("busy", "quiet", "thoughtful", "ready", "awake", "curious"),
    },
    "sky": {
        "positive": ("bright", "sunny", "warm", "clear", "golden", "lovely"),
        "negative": ("grey", "cold", "dark", "stormy", "bleak", "gloomy"),
        "neutral": ("cloudy", "windy", "pale", "white", "still", "high"),
    },
    "place_adj": {
        "positive": ("beautiful", "charming", "peaceful", "lively", "cozy", "wonderful"),
        "negative": ("dirty", "noisy", "dreary", "ugly", "awful", "shabby"),
        "neutral": ("large", "small", "busy", "quiet", "ordinary", "familiar"),
    },
    "greet": {
        "positive": ("smiled warmly", "laughed with joy", "waved happily", "gave {o} a friendly hug",
                     "greeted {o} with a kind word", "cheered at the sight of {o}"),
        "negative": ("frowned", "sighed and looked away", "ignored {o} rudely", "shouted angrily",
                     "looked at {o} with disgust", "complained about everything"),
        "neutral": ("nodded", "said hello", "waved", "looked at the clock", "shook {ps} hand",
                    "asked about the weather"),
    },
    "event": {
        "positive": ("found a shiny coin on the path", "won a prize in a small contest",
                     "heard wonderful music from an open window", "saw a beautiful rainbow over the roofs",
                     "got a free cake from a kind baker", "finished the errands early and felt proud",
                     "found the perfect gift for a friend"),
        "negative": ("lost {ps} keys on the path", "missed the last bus home", "broke {ps} favorite cup",
                     "tripped and hurt {ps} knee", "got soaked in the cold rain",
                     "dropped {ps} lunch in the mud", "was scolded by an angry guard",
                     "tore {ps} new coat on a nail"),
        "neutral": ("bought a newspaper", "counted the coins in {ps} pocket", "read a sign by the door",
                    "checked the time", "wrote a short list", "sat down on a bench", "looked at the map"),
    },
    "wind": {
        "positive": ("soft", "gentle", "warm"),
        "negative": ("harsh", "bitter", "icy"),
        "neutral": ("stronger", "weaker", "steady"),
    },
    "food_adj": {
        "positive": ("delicious", "fresh", "sweet", "tasty", "perfect", "lovely"),
        "negative": ("stale", "burnt", "sour", "soggy", "awful", "tasteless"),
        "neutral": ("small", "large", "plain", "simple"),
    },
    "quote": {  # (words, final punctuation)
        "positive": ("What a wonderful day!", "I am so glad we came.", "This is perfect.",
                     "I love this place.", "This is great fun!", "Everything is going beautifully."),
        "negative": ("What a terrible day!", "I hate this place.", "Everything is going wrong.",
                     "This is awful.", "I am so tired of this.", "Why is this day so horrible?"),
        "neutral": ("The bus comes at 5.", "Let us go inside.", "It is almost noon.", "Where is the map?",
                    "We can walk from here.", "I will be back soon."),
    },
    "role_act": {
        "positive": ("gave {o} a helpful tip", "told {o} a funny story", "was kind and patient with {o}",
                     "offered {o} a warm smile", "praised {ps} good manners", "played a cheerful song"),
        "negative": ("was rude to {o}", "told {o} some bad news", "charged {o} an unfair price",
                     "yelled at {o} for no reason", "pushed past {o} without a word", "played a sad song"),
        "neutral": ("asked {o} the time", "pointed at the map", "sold {o} a ticket",
                    "walked past with a box", "opened a window", "counted some coins"),
    },
    "pace": {
        "positive": ("pleasantly", "happily", "gently", "merrily", "peacefully"),
        "negative": ("wearily", "painfully", "miserably", "terribly", "sadly"),
        "neutral": ("as usual", "as always", "without much news"),
    },
    "end_manner": {
        "positive": ("smiling", "laughing", "humming a happy tune", "full of joy"),
        "negative": ("crying", "in tears", "frowning", "shaking with anger"),
        "neutral": ("on foot", "by bus", "at 6", "with a bag"),
    },
    "end_clause": {
        "positive": ("thankful for such a good day", "already excited about the next visit",
                     "sure that life was good", "feeling lucky and loved"),
        "negative": ("regretting the whole trip", "feeling hopeless and alone", "too tired to eat",
                     "with a bad headache"),
        "neutral": ("ready for dinner", "thinking about the next day", "counting the coins left",
                    "with the shopping in a bag"),
    },
    "close_adj": {
        "positive": ("perfect", "lovely", "wonderful", "happy", "splendid", "great"),
        "negative": ("terrible", "horrible", "awful", "miserable", "dreadful", "rotten"),
        "neutral": ("normal", "ordinary", "long", "usual", "short"),
    },
    "extreme": {"positive": ("best",), "negative": ("worst",), "neutral": ()},
}


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class _Cast:
    """The people of one story: the hero (P), a companion (C) and their pronouns."""

    __slots__ = ("P", "p", "o", "ps", "C", "cp", "co", "cps", "place", "rel", "with_c", "event")

    def __init__(self, rng: random.Random, hero: tuple[str, str] | None = None) -> None:
        drawn = rng.choice(PEOPLE)
        comp = rng.choice(PEOPLE)
        while comp[0] == drawn[0]:
            comp = rng.choice(PEOPLE)
        if hero is not None:  # replaces the draw afterwards, so the rest of the story is unchanged
            if hero[0] == comp[0]:
                raise CorpusError(f"{hero[0]} is this story's companion and cannot be its hero; pick another name")
            drawn = hero
        hero = drawn
        self.P, (self.p, self.o, self.ps) = hero[0], _PRONOUNS[hero[1]]
        self.C, (self.cp, self.co, self.cps) = comp[0], _PRONOUNS[comp[1]]
        self.place = rng.choice(PLACES)
        self.rel = rng.choice(RELATIVES)
        self.with_c = False
        self.event = ""  # the hero's event, so the companion's is a different one


def _opening(rng: random.Random, cast: _Cast) -> str:
    purpose = rng.choice(PURPOSES)
    cast.with_c = "{C}" in purpose
    purpose = purpose.format(C=cast.C, ps=cast.ps, rel=cast.rel)
    return f"{rng.choice(TIMES)}, {cast.P} {rng.choice(TRAVEL)} to the {cast.place}{purpose}."


def is_held_out(opening: str) -> bool:
    """Whether an opening sentence belongs to the held-out part (never used in training text)."""
    return zlib.crc32(opening.encode("ascii")) % HOLDOUT_MOD == 0


# ------------------------------------------------------------------ sentences after the opening


def _decision(rng: random.Random, c: _Cast, lab: str) -> str:
    pick = lambda slot: rng.choice(LEXICON[slot][lab])  # noqa: E731
    form = rng.randrange(4)
    if form == 0:
        return f"The sky was {pick('sky')} and {c.p} felt {pick('mood')}."
    if form == 1:
        return f"{_cap(c.p)} felt {pick('mood')} as {c.p} arrived."
    if form == 2:
        return f"The {c.place} looked {pick('place_adj')} that day, and {c.p} felt {pick('mood')}."
    return f"It was {_a(pick('sky'))} day, and {c.P} was {pick('mood')}."


def _meet(rng, c, lab):
    greet = rng.choice(LEXICON["greet"][lab]).format(o=c.o, ps=c.ps)
    if c.with_c:
        return f"{c.C} {greet}."
    return f"There {c.p} met {c.C}, who {greet}."


def _event(rng, c, lab):
    c.event = rng.choice(LEXICON["event"][lab])
    event = c.event.format(o=c.o, ps=c.ps, p=c.p)
    return f"{rng.choice(('Then', 'After a while,', 'Soon'))} {c.P} {event}."


def _wind(rng, c, lab):
    return f"Later the wind grew {rng.choice(LEXICON['wind'][lab])}."


def _food(rng, c, lab):
    food = f"{_a(rng.choice(LEXICON['food_adj'][lab]))} {rng.choice(FOODS)}"
    return f"They shared {food}." if rng.random() < 0.5 else f"{c.P} ate {food}."


def _quote(rng, c, lab):
    q = rng.choice(LEXICON["quote"][lab])
    words, end = q[:-1], q[-1]
    speaker = c.C if rng.random() < 0.6 else c.P
    return f'"{words}," said {speaker}.' if end == "." else f'"{words}{end}" said {speaker}.'


def _role(rng, c, lab):
    act = rng.choice(LEXICON["role_act"][lab]).format(o=c.o, ps=c.ps)
    return f"{_cap(_a(rng.choice(ROLE_LOOKS)))} {rng.choice(ROLES)} {act}."


def _companion_event(rng, c, lab):
    event = rng.choice([e for e in LEXICON["event"][lab] if e != c.event]).format(o=c.co, ps=c.cps, p=c.cp)
    return f"Later, {c.C} {event}."


def _pace(rng, c, lab):
    span = rng.choice(("The hours", "The afternoon", "The time"))
    verb = "passed" if span != "The afternoon" else "went by"
    return f"{span} {verb} {rng.choice(LEXICON['pace'][lab])}."


def _ending(rng, c, lab):
    manner = rng.choice(LEXICON["end_manner"][lab])
    clause = rng.choice(LEXICON["end_clause"][lab])
    return f"In the end, {c.P} went home {manner}, {clause}."


def _closer(rng, c, lab):
    if lab != "neutral" and rng.random() < 0.4:
        return f"It was the {LEXICON['extreme'][lab][0]} day of the {rng.choice(('week', 'month', 'year'))}."
    adj = rng.choice(LEXICON["close_adj"][lab])
    if rng.random() < 0.5:
        return f"It was {_a(adj)} day."
    return f"{c.P} would remember it as {_a(adj)} day."


def _passing(rng, c, lab):
    sight = f"{_a(rng.choice(LEXICON['place_adj'][lab]))} {rng.choice(LANDMARKS)}"
    return f"On the way back, {c.P} and {c.C} passed {sight}."


_MIDDLE = (_event, _wind, _food, _quote, _role, _companion_event, _passing, _pace)  # in story order


def _story(rng: random.Random, label: str, held_out_ok: bool = False,
           hero: tuple[str, str] | None = None) -> tuple[str, int, int]:
    cast = _Cast(rng, hero)
    opening = _opening(rng, cast)
    while not held_out_ok and is_held_out(opening):
        opening = _opening(rng, cast)
    decision = _decision(rng, cast, label)
    k = rng.randint(2, 4)
    chosen = sorted(rng.sample(range(len(_MIDDLE)), k))
    sentences = [opening, decision, _meet(rng, cast, label)]
    sentences += [_MIDDLE[i](rng, cast, label) for i in chosen]
    sentences.append(_ending(rng, cast, label))
    if rng.random() < 0.6:
        sentences.append(_closer(rng, cast, label))
    return " ".join(sentences), len(opening), len(opening) + 1 + len(decision)


def generate_story(label: str, rng: random.Random | int | None = None, hero: str | None = None) -> str:
    """One story with the given label (`rng` a `random.Random` or a seed); never a held-out opening.

    `hero` names the main character (one of `FEMALE` / `MALE`). The same seed with another hero
    gives the same story with only the hero's name and pronouns changed: matched pairs for a
    direction that is not sentiment (see `pronoun_gender`).
    """
    _check_labels((label,))
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    return _story(rng, label, hero=_person(hero) if hero is not None else None)[0]


def _person(name: str) -> tuple[str, str]:
    for person in PEOPLE:
        if person[0] == name:
            return person
    raise CorpusError(f"unknown name {name!r}; choose one of the names in FEMALE or MALE")


_PRONOUN_GENDER = {"she": 1, "her": 1, "he": -1, "him": -1, "his": -1}


def pronoun_gender(text: str) -> float:
    """+1 when the first personal pronoun of `text` is female (she, her), -1 when male (he, him,
    his), 0 when there is none: which gender a continuation gives its hero."""
    for word in _WORD.findall(text.lower()):
        if word in _PRONOUN_GENDER:
            return float(_PRONOUN_GENDER[word])
    return 0.0


def story_prefix_to_decision(story: str) -> int:
    """Characters of `story` before its label is decided: the end of its neutral opening sentence.

    ``story[:story_prefix_to_decision(story)]`` says nothing about the label; the next sentence does.
    """
    i = story.find(".")
    if i < 0:
        raise ValueError("not a generated story: it has no first sentence ending in '.'")
    return i + 1


def story_prefix_to_reveal(story: str) -> int:
    """The end of the first sentence that shows the label (the sentence after the opening)."""
    d = story_prefix_to_decision(story)
    i = story.find(".", d + 1)
    if i < 0:
        raise ValueError("not a generated story: it has no second sentence ending in '.'")
    return i + 1


def _check_labels(labels: Sequence[str]) -> None:
    bad = [lab for lab in labels if lab not in LABELS]
    if bad or not labels:
        raise CorpusError(f"unknown story labels {bad}; choose from {', '.join(LABELS)}")


def generate_corpus(
    size_chars: int = DEFAULT_SIZE, seed: int = 0, *, labels: Sequence[str] = DEFAULT_LABELS
) -> Corpus:
    """Stories, separated by a blank line, until the text holds at least `size_chars` characters.

    Labels come in shuffled rounds of one story per label, so the classes stay balanced (counts
    differ by at most one). Deterministic given `seed`. Pass
    ``labels=("positive", "negative", "neutral")`` to add a neutral class (no sentiment words).
    """
    if size_chars <= 0:
        raise CorpusError(f"size_chars must be a positive number of characters, got {size_chars}")
    labels = tuple(labels)
    _check_labels(labels)
    rng = random.Random(seed)
    pieces: list[str] = []
    stories: list[Story] = []
    pos = 0
    round_: list[str] = []
    while pos < size_chars:
        if not round_:
            round_ = list(labels)
            rng.shuffle(round_)
        label = round_.pop()
        text, decision, reveal = _story(rng, label)
        stories.append(Story(label, pos, pos + len(text), pos + decision, pos + reveal))
        pieces.append(text)
        pos += len(text) + len(SEPARATOR)
    text = SEPARATOR.join(pieces) + "\n"
    return Corpus(name="sentiment", text=text, stories=stories, labels=labels, seed=seed)


def neutral_openings(n: int, seed: int = 0) -> list[str]:
    """`n` distinct story openings that do not reveal a label and never occur in a generated corpus.

    Each is one sentence ending in ``.``, as a generated story begins (the corpus continues it
    with a space and the sentence that decides the label): prompts for steering and its evaluation.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"nanolens-openings-{seed}")
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * (n + 10):
            raise ValueError(f"could not find {n} distinct held-out openings; ask for fewer")
        opening = _opening(rng, _Cast(rng))
        if is_held_out(opening) and opening not in seen:
            seen.add(opening)
            out.append(opening)
    return out
