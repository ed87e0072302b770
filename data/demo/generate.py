#!/usr/bin/env python3
"""Generate ragtune's fictional-archipelago demo dataset, deterministically.

The dataset describes an invented archipelago: its islands, towns, cooperatives, festivals, ferry
lines and local products, all with made-up names built from syllables. Nothing in it exists, so a
language model cannot answer the questions from memory: it has to retrieve the right passage and
ground its answer in it.

Run from the repository root::

    python data/demo/generate.py [--out data/demo]

It writes, into the output folder, ``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``,
``qrels/test.tsv``, ``qa.jsonl`` and ``qa_<split>.jsonl`` (see ``README.md`` next to this file). Every random choice comes
from one ``random.Random(0)``, so two runs give byte-identical files. Each file is written to a
temporary file in the same folder and then moved into place with ``os.replace``.

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

SEED = 0

# How many entities of each family, and how many sibling pairs ("distractors") among them.
N_ISLANDS = 14
N_TOWNS, N_TWIN_TOWNS = 90, 12
N_COOPS, N_COOP_PAIRS = 60, 10
N_FESTIVALS, N_FESTIVAL_PAIRS = 50, 8
N_FERRIES, N_FERRY_PAIRS = 40, 8
N_PRODUCTS, N_PRODUCT_PAIRS = 46, 8

TWO_PASSAGE_SHARE = 0.13  # share of entity groups described by a "History of X" and an "X today"
N_QUESTIONS = 180
TRAIN_SHARE = 0.7

MIN_WORDS, MAX_WORDS = 40, 120
MIN_SENTENCES, MAX_SENTENCES = 2, 5
CORPUS_RANGE = (300, 400)
QUESTION_RANGE = (150, 200)

# --------------------------------------------------------------------------------------------------
# Invented names
# --------------------------------------------------------------------------------------------------

ONSETS = (
    "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    "br", "dr", "gr", "kr", "tr", "th", "sk", "st", "", "",
)  # fmt: skip
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ou", "y")
FINAL_CODAS = ("", "", "", "l", "n", "r", "s", "th", "rn", "nd", "m", "sk", "k", "sh", "st")
INNER_CODAS = ("", "", "", "", "l", "n", "r", "s")
# Letter sequences that make a name hard to say: three consonants or vowels in a row, doubled
# vowels, and a few awkward pairs.
AWKWARD = re.compile(
    r"[^aeiouy]{3}|[aeiouy]{3}|aa|ee|ii|oo|uu|yy|ya|yo|yu|ey|uy|oy|ae[aeiou]|hr|nm|mn|sr|lr|rl"
)

# Real places (and a few common words) that the syllable generator could plausibly spell.
REAL_NAMES = frozenset(
    (
        "aldo", "alta", "arran", "baku", "bali", "bergen", "bern", "bodo", "bora", "bragi", "capri",
        "corfu", "crete", "cuba", "delos", "doha", "dover", "elba", "faro", "goa", "hale", "hull",
        "iona", "islay", "java", "jura", "kesh", "kobra", "kos", "krain", "laos", "lena", "lewis",
        "lima", "luga", "mali", "malmo", "malta", "milan", "mull", "naxos", "nice", "nile", "oban",
        "oman", "oslo", "paros", "peru", "porto", "riga", "rome", "samoa", "samos", "sana", "skye",
        "sora", "tana", "tara", "texel", "togo", "tonga", "tora", "turin", "turku", "tyne", "vaasa",
        "varna", "visby", "vora", "york", "zara",
    )
)  # fmt: skip


class NameForge:
    """Invents pronounceable names from syllables and never hands out the same one twice."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._used: set[str] = set()  # only ever tested for membership, never iterated

    def _syllables(self, n: int) -> str:
        parts = []
        for i in range(n):
            coda = self.rng.choice(FINAL_CODAS if i == n - 1 else INNER_CODAS)
            parts.append(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + coda)
        return "".join(parts)

    def _fresh(self, make: Callable[[], str]) -> str:
        while True:
            w = make()
            if 4 <= len(w) <= 9 and not AWKWARD.search(w) and w not in self._used and w not in REAL_NAMES:
                self._used.add(w)
                return w

    def word(self, min_syllables: int = 2, max_syllables: int = 3) -> str:
        """A fresh lower-case invented word of 4 to 9 letters."""
        return self._fresh(lambda: self._syllables(self.rng.randint(min_syllables, max_syllables)))

    def place(self) -> str:
        """A capitalised invented place name."""
        return self.word().capitalize()

    def person(self) -> str:
        """An invented 'Given Surname' person name."""
        given = self.word(2, 2).capitalize()
        suffixes = ("", "", "", "ik", "sen", "ard", "ane", "ell")
        surname = self._fresh(lambda: self._syllables(2) + self.rng.choice(suffixes))
        return f"{given} {surname.capitalize()}"


# --------------------------------------------------------------------------------------------------
# Value pools
# --------------------------------------------------------------------------------------------------

COLOURS = (
    "saffron", "teal", "crimson", "ochre", "slate grey", "moss green", "indigo", "amber", "rust red",
    "ivory", "cobalt blue", "plum", "sea green", "copper", "charcoal", "rose pink", "lemon yellow",
    "violet", "russet", "turquoise",
)  # fmt: skip
EXPORTS = (
    "slate", "kelp ash", "salted cod", "dried seaweed", "raw wool", "amber resin", "cut peat",
    "smoked mackerel", "flax fibre", "pumice", "limestone", "malting barley", "oyster shells",
    "sheepskins", "hemp rope", "juniper berries", "eiderdown", "pine tar", "whetstones", "dried eel",
)  # fmt: skip
COOP_KINDS: dict[str, tuple[str, ...]] = {
    "Fishing": ("smoked herring", "salted cod", "pickled mussels"),
    "Weaving": ("nettle cloth", "linen sailcloth", "striped blankets"),
    "Salt": ("flake salt", "smoked salt", "grey sea salt"),
    "Honey": ("heather honey", "clover honey", "beeswax candles"),
    "Kelp": ("kelp fertiliser", "dried dulse", "kelp soda"),
    "Boatbuilders'": ("clinker rowing boats", "fishing skiffs", "ash oars"),
    "Dyers'": ("madder dye", "woad dye", "lichen dye"),
    "Potters'": ("glazed jugs", "clay roof tiles", "storage jars"),
    "Cider": ("apple cider", "pear perry", "rowan wine"),
    "Shepherds'": ("carded wool", "felted hats", "sheep's cheese"),
}
EMBLEM_THINGS = ("anchor", "gull", "fish", "wheel", "star", "key", "oar", "bee", "shell", "hand")
HALL_KINDS = ("Hall", "House", "Boathouse", "Loft", "Warehouse")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FESTIVAL_THEMES = (
    "Lantern", "Kelp", "Tide", "Herring", "Bonfire", "Salt", "Ribbon", "Drum", "Harvest", "Boat", "Lamb",
    "Mist",
)  # fmt: skip
SEASONS: dict[str, tuple[str, ...]] = {
    "Spring": ("March", "April", "May"),
    "Summer": ("June", "July", "August"),
    "Autumn": ("September", "October", "November"),
    "Winter": ("December", "January", "February"),
}
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
DECOR = ("ribbons", "lanterns", "sashes", "banners", "masks", "garlands", "paper boats")
EVENTS = (
    "rowing race", "tug of war", "torch procession", "kite contest", "rope-climbing contest",
    "singing contest", "harbour swim", "bread-baking contest", "goat parade", "net-mending contest",
    "bonfire dance", "sheep-shearing race",
)  # fmt: skip
DISH_KINDS = ("stew", "pie", "broth", "buns", "cakes", "porridge", "fritters", "dumplings")
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine")
PRODUCT_KINDS: dict[str, tuple[str, ...]] = {
    "a hard cheese": ("ewe's milk", "goat's milk", "cow's milk"),
    "a bitter liqueur": (
        "sea buckthorn",
        "cloudberries",
        "juniper berries",
        "rowan berries",
        "blackcurrants",
    ),
    "a coarse cloth": ("flax", "nettle fibre", "sheep's wool", "hemp"),
    "a dark flatbread": ("rye flour", "barley flour", "oat flour"),
    "a scented candle": ("beeswax", "tallow", "bayberry wax"),
    "a glazed earthenware": ("red clay", "white clay", "river clay"),
    "a smoked fish paste": ("mackerel", "eel", "herring", "pollock"),
}
PEAK_FORMS = ("Mount {}", "{} Peak", "{} Fell", "{} Crag")


def pick_flag(rng: random.Random) -> str:
    """Two distinct flag colours, as 'saffron and teal'."""
    first, second = rng.sample(COLOURS, 2)
    return f"{first} and {second}"


# --------------------------------------------------------------------------------------------------
# Writing: sentence templates per family
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One sentence position in a passage: the facts it states and the ways of phrasing it."""

    keys: tuple[str, ...]
    templates: tuple[str, ...]


@dataclass(frozen=True)
class FamilySpec:
    """How passages and questions about one family of entities are written.

    A passage is a list of slots: its ``*_core`` slots (shuffled; the first one opens the passage
    and names the entity) and a sample of its ``*_extra`` slots. An entity described by a single
    passage uses ``single_*``; one described by two uses ``history_*`` and ``today_*``.
    """

    slots: dict[str, Slot]
    fillers: tuple[str, ...]
    single_core: tuple[str, ...]
    single_extra: tuple[str, ...]
    history_core: tuple[str, ...]
    history_extra: tuple[str, ...]
    today_core: tuple[str, ...]
    today_extra: tuple[str, ...]
    questions: dict[str, tuple[str, ...]]


TOWN = FamilySpec(
    slots={
        "origin": Slot(
            ("founded", "founder"),
            (
                "{Ref} was founded in {founded} by {founder}.",
                "{founder} laid out the first streets of {ref} in {founded}.",
                "The settlement of {ref} dates from {founded}, when {founder} built a jetty and a handful"
                " of cottages there.",
                "Local records name {founder} as the founder of {ref} and give {founded} as the year the"
                " first families arrived.",
            ),
        ),
        "location": Slot(
            ("island", "river"),
            (
                "{Ref} lies on the {river}, on the island of {island}.",
                "Set at the mouth of the {river}, {ref} is one of the older settlements of {island}.",
                "{Ref} stands on both banks of the {river}, close to the coast of {island}.",
            ),
        ),
        "river": Slot(
            ("river",),
            (
                "The town grew up along the {river}, whose water once drove its mills.",
                "Its first houses were built on the banks of the {river}.",
                "{Ref} owes its site to the {river}, which small boats could sail up at high tide.",
            ),
        ),
        "island": Slot(
            ("island",),
            (
                "{Ref} is a market town on the island of {island}.",
                "Today {ref} is counted among the main settlements of {island}.",
                "{Ref} remains one of the busiest harbours on {island}.",
            ),
        ),
        "population": Slot(
            ("population",),
            (
                "About {population} people live in {ref}.",
                "The last island census counted {population} inhabitants.",
                "Its population stands at roughly {population}.",
            ),
        ),
        "export": Slot(
            ("export",),
            (
                "Its main export is {export}.",
                "Most of the town's trade is in {export}, which is shipped to the other islands.",
                "The quay is busiest in autumn, when {export} is loaded for the mainland markets.",
            ),
        ),
        "flag": Slot(
            ("flag",),
            (
                "The town flag is {flag}.",
                "On feast days the {flag} town flag flies above the harbour office.",
                "Its banner is split into {flag} halves.",
            ),
        ),
        "former": Slot(
            ("former",),
            (
                "In its early years the place was known as {former}.",
                "Old sea charts still show it under its former name, {former}.",
                "Before the present name came into use, the settlement was called {former}.",
            ),
        ),
        "mayor": Slot(
            ("mayor",),
            (
                "The town council is led by {mayor}.",
                "{mayor} currently serves as mayor.",
                "The present mayor, {mayor}, was elected after a close vote.",
            ),
        ),
    },
    fillers=(
        "Narrow lanes of whitewashed houses climb the slope above the quay.",
        "In winter, storms often cut the town off from its neighbours for days.",
        "The old market hall by the harbour is still used for livestock auctions.",
        "Visitors often remark on the smell of peat smoke drifting over the roofs.",
        "A long stone breakwater shelters the small fishing fleet from the winter swell.",
    ),
    single_core=("origin", "location"),
    single_extra=("population", "export", "flag", "former", "mayor"),
    history_core=("origin",),
    history_extra=("river", "former"),
    today_core=("island",),
    today_extra=("population", "export", "flag", "mayor"),
    questions={
        "founded": (
            "In which year did {ref} come into being?",
            "When were the first homes of {ref} established?",
            "How far back does {ref} go - what is its year of foundation?",
        ),
        "founder": (
            "Who is credited with starting {ref}?",
            "Which settler established {ref}?",
            "Who set up the town of {ref}?",
        ),
        "island": ("On which island can {ref} be found?", "Which island is {ref} part of?"),
        "river": ("Which river runs through {ref}?", "What river is {ref} built beside?"),
        "population": ("How many people live in {ref}?", "How many inhabitants does {ref} have?"),
        "export": (
            "What does {ref} mainly sell to other places?",
            "What is the chief product shipped out of {ref}?",
        ),
        "flag": ("What colours appear on the flag of {ref}?", "Which two colours make up {ref}'s banner?"),
        "former": ("What was {ref} called in the past?", "Under what earlier name was {ref} known?"),
        "mayor": ("Who heads the council of {ref}?", "Who holds the office of mayor in {ref}?"),
    },
)

ISLAND = FamilySpec(
    slots={
        "settle": Slot(
            ("settled", "settler"),
            (
                "{Ref} was first settled in {settled} by a crew under {settler}.",
                "According to the island chronicle, {settler} landed on {ref} in {settled} and built its"
                " first village.",
                "The earliest permanent settlement on {ref} dates from {settled} and was led by {settler}.",
            ),
        ),
        "size": Slot(
            ("area",),
            (
                "The island covers {area}.",
                "With an area of {area}, it is neither the largest nor the smallest of the group.",
                "Its coastline encloses some {area} of moor and pasture.",
            ),
        ),
        "peak": Slot(
            ("peak", "height"),
            (
                "Its highest point is {peak}, which rises to {height}.",
                "{peak}, at {height}, is the tallest summit on the island.",
                "Walkers climb {peak} ({height}) for the view over the neighbouring islands.",
            ),
        ),
        "capital": Slot(
            ("capital",),
            (
                "The island's main town is {capital}.",
                "{capital} serves as the seat of the island council.",
                "Most ferries call at {capital}, the island's administrative centre.",
            ),
        ),
        "population": Slot(
            ("population",),
            (
                "{Ref} has about {population} inhabitants.",
                "Roughly {population} people live on {ref} today.",
                "The most recent census recorded {population} residents on {ref}.",
            ),
        ),
        "export": Slot(
            ("export",),
            (
                "The island's chief export is {export}.",
                "Its economy rests largely on {export}.",
                "Ships leave its harbours loaded with {export}.",
            ),
        ),
        "flag": Slot(
            ("flag",),
            (
                "The island flag is {flag}.",
                "Its flag combines the colours {flag}.",
                "The {flag} flag of the island is flown from every church tower.",
            ),
        ),
    },
    fillers=(
        "{Ref} is one of the islands of {archipelago}.",
        "Sheep graze almost everywhere that is not bare rock or bog.",
        "Fog banks roll in from the west on most summer mornings.",
        "The interior is a patchwork of bog, heather and stone walls.",
        "Seabirds nest in great numbers on the high northern cliffs every spring.",
    ),
    single_core=("settle",),
    single_extra=("size", "peak", "capital", "population", "export", "flag"),
    history_core=("settle",),
    history_extra=("size", "peak"),
    today_core=("population",),
    today_extra=("capital", "export", "flag"),
    questions={
        "settled": (
            "In what year did people first make a permanent home on {ref}?",
            "When did the settlement of {ref} begin?",
        ),
        "settler": (
            "Who led the first settlers to {ref}?",
            "Which person founded the first village on {ref}?",
        ),
        "area": ("How big is {ref}?", "What is the surface area of {ref}?"),
        "peak": (
            "What is the name of the tallest mountain on {ref}?",
            "Which summit is the highest on {ref}?",
        ),
        "height": (
            "How tall is the highest mountain of {ref}?",
            "What elevation does the top of {ref} reach?",
        ),
        "capital": (
            "Which town is the administrative centre of {ref}?",
            "Where does the council of {ref} sit?",
        ),
        "population": ("How many people live on {ref}?", "What is the population of {ref}?"),
        "export": (
            "What is the main product {ref} sells abroad?",
            "What does the economy of {ref} depend on?",
        ),
        "flag": ("What colours are on the flag of {ref}?", "Which colours does the banner of {ref} show?"),
    },
)

COOP = FamilySpec(
    slots={
        "origin": Slot(
            ("founded", "founder"),
            (
                "{Ref} was founded in {founded} by {founder}.",
                "{founder} set up {ref} in {founded}, bringing together a few dozen families.",
                "Established in {founded}, {ref} owes its existence to {founder}.",
            ),
        ),
        "members": Slot(
            ("members",),
            (
                "{Ref} now has {members} members.",
                "Membership of {ref} currently stands at {members}.",
                "Some {members} households belong to the cooperative.",
            ),
        ),
        "product": Slot(
            ("product",),
            (
                "Its best-known product is {product}.",
                "The cooperative is known across the islands for its {product}.",
                "Most of its income comes from selling {product}.",
            ),
        ),
        "emblem": Slot(
            ("emblem_colour",),
            (
                "Its emblem is a {emblem_colour} {emblem_thing}.",
                "Boats and crates belonging to the cooperative carry a {emblem_colour} {emblem_thing} as"
                " their mark.",
                "The {emblem_colour} {emblem_thing} on its emblem is a familiar sight in local markets.",
            ),
        ),
        "meeting": Slot(
            ("weekday", "hall"),
            (
                "Members meet every {weekday} in {hall}.",
                "The general assembly is held each {weekday} evening at {hall}.",
                "Every {weekday}, the members gather at {hall} to set prices.",
            ),
        ),
    },
    fillers=(
        "Decisions are taken by a show of hands, one vote per member.",
        "New members serve a long apprenticeship before they may vote.",
        "Part of each year's profit is set aside for widows and injured workers.",
        "Its accounts are read aloud to the members once a year.",
    ),
    single_core=("origin",),
    single_extra=("members", "product", "emblem", "meeting"),
    history_core=("origin",),
    history_extra=("emblem",),
    today_core=("members",),
    today_extra=("product", "meeting"),
    questions={
        "founded": ("In which year was {ref} started?", "Since what year has {ref} existed?"),
        "founder": ("Who started {ref}?", "Which person is credited with creating {ref}?"),
        "members": ("How many members does {ref} have?", "How large is the membership of {ref}?"),
        "product": ("What is {ref} famous for producing?", "Which goods does {ref} mainly sell?"),
        "emblem_colour": (
            "What colour is the {emblem_thing} in the emblem of {ref}?",
            "Which colour is the mark used by {ref}?",
        ),
        "weekday": (
            "On which day of the week do the members of {ref} get together?",
            "Which weekday is meeting day for {ref}?",
        ),
        "hall": ("Where do the members of {ref} hold their meetings?", "In which building does {ref} meet?"),
    },
)

FESTIVAL = FamilySpec(
    slots={
        "when": Slot(
            ("date",),
            (
                "{Ref} is held every year on {date}.",
                "Each year on {date}, {ref} fills the streets around the harbour.",
                "The date of {ref} never changes: it always begins on {date}.",
            ),
        ),
        "origin": Slot(
            ("founded", "founder"),
            (
                "{Ref} was first held in {founded}, on the initiative of {founder}.",
                "It was {founder} who organised the first {name}, in {founded}.",
                "The tradition of {ref} goes back to {founded}, when {founder} invited the neighbouring"
                " villages to a feast.",
            ),
        ),
        "length": Slot(
            ("duration",),
            (
                "The celebrations last {duration}.",
                "The festivities go on for {duration}.",
                "Over {duration}, the town hosts music, markets and races.",
            ),
        ),
        "dish": Slot(
            ("dish",),
            (
                "The traditional dish of the festival is {dish}.",
                "No celebration is complete without {dish}, cooked in the open air.",
                "Stalls along the quay sell {dish} to visitors.",
            ),
        ),
        "colour": Slot(
            ("colour",),
            (
                "The streets are decked out with {colour} {decor} for the occasion.",
                "{Decor} in {colour} are the trademark of the festival.",
                "Participants can be recognised by their {colour} {decor}.",
            ),
        ),
        "event": Slot(
            ("event",),
            (
                "The highlight is a {event} on the last evening.",
                "Crowds gather for the {event}, the main event of the programme.",
                "Its best-attended event is the {event}.",
            ),
        ),
    },
    fillers=(
        "Musicians from the other islands arrive on chartered boats the evening before.",
        "Schools close for the whole celebration, and most shops shut at noon.",
        "Many families return home from the mainland for the occasion.",
        "Rain rarely stops the crowds from turning out, even in a bad year.",
    ),
    single_core=("when",),
    single_extra=("origin", "length", "dish", "colour", "event"),
    history_core=("origin",),
    history_extra=("dish", "event"),
    today_core=("when",),
    today_extra=("length", "colour"),
    questions={
        "date": ("On which day of the year does {ref} start?", "When in the year is {ref} celebrated?"),
        "founded": (
            "In what year did {ref} take place for the first time?",
            "Since which year has {ref} been celebrated?",
        ),
        "founder": ("Who started {ref}?", "Which person came up with {ref}?"),
        "duration": ("How long does {ref} go on for?", "For how many days is {ref} celebrated?"),
        "dish": ("Which food is traditionally eaten at {ref}?", "What dish is associated with {ref}?"),
        "colour": ("What colour are the {decor} at {ref}?", "Which colour is used for the {decor} of {ref}?"),
        "event": ("What is the centrepiece of {ref}?", "Which event draws the biggest crowds at {ref}?"),
    },
)

FERRY = FamilySpec(
    slots={
        "route": Slot(
            ("opened",),
            (
                "{Ref} links {origin} with {dest} and has operated since {opened}.",
                "Opened in {opened}, {ref} carries passengers and freight between {origin} and {dest}.",
                "Since {opened}, {ref} has connected the harbours of {origin} and {dest}.",
            ),
        ),
        "departure": Slot(
            ("departure",),
            (
                "{Ref} leaves {origin} at {departure} each day.",
                "{Ref} departs from {origin} daily at {departure}.",
                "Boats leave {origin} at {departure} every day.",
                "The ship casts off from {origin} at {departure} sharp.",
            ),
        ),
        "crossing": Slot(
            ("minutes",),
            (
                "The crossing takes {minutes}.",
                "In calm weather the journey lasts about {minutes}.",
                "Passengers spend roughly {minutes} on board.",
            ),
        ),
        "vessel": Slot(
            ("vessel", "hull"),
            (
                "The route is served by the {vessel}, a {hull}-hulled motor ship.",
                "Its only vessel, the {vessel}, is painted {hull}.",
                "Islanders recognise the {hull} hull of the {vessel} from far off.",
            ),
        ),
        "captain": Slot(
            ("captain",),
            (
                "Its captain is {captain}.",
                "{captain} has commanded the ship for many years.",
                "The crew answers to {captain}, the longest-serving skipper on the line.",
            ),
        ),
        "fare": Slot(
            ("fare",),
            (
                "A single ticket costs {fare}.",
                "The one-way fare is {fare}.",
                "Foot passengers pay {fare} for the trip.",
            ),
        ),
    },
    fillers=(
        "Sailings are often cancelled in January and February, when the westerly gales are at their worst.",
        "Bicycles, post sacks and the occasional flock of sheep travel on the lower deck.",
        "A small galley on board serves tea and fish soup.",
        "On summer crossings, dolphins are sometimes seen following the boat.",
    ),
    single_core=("route",),
    single_extra=("departure", "crossing", "vessel", "captain", "fare"),
    history_core=("route",),
    history_extra=("vessel",),
    today_core=("departure",),
    today_extra=("crossing", "captain", "fare"),
    questions={
        "opened": ("In which year did {ref} begin service?", "Since when has {ref} been in operation?"),
        "departure": (
            "What time does {ref} set off from {origin}?",
            "At what hour does the boat on {ref} leave {origin}?",
        ),
        "minutes": ("How long is the journey on {ref}?", "How much time does a trip on {ref} take?"),
        "vessel": ("Which ship sails on {ref}?", "What is the name of the boat used on {ref}?"),
        "hull": (
            "What colour is the hull of the ship on {ref}?",
            "Which colour is the vessel that serves {ref} painted?",
        ),
        "captain": ("Who is in command of the boat on {ref}?", "Who skippers the ship of {ref}?"),
        "fare": ("How much does it cost to travel on {ref}?", "What is the price of a ticket on {ref}?"),
    },
)

PRODUCT = FamilySpec(
    slots={
        "what": Slot(
            ("ingredient",),
            (
                "{Ref} is {category} made from {ingredient}.",
                "Made from {ingredient}, {ref} is {category} from the town of {town}.",
                "{Ref}, {category} produced from {ingredient}, is one of the best-known local goods of"
                " {town}.",
            ),
        ),
        "origin": Slot(
            ("first_sold", "inventor"),
            (
                "{inventor} is said to have invented {ref} in {first_sold}.",
                "{Ref} first appeared on the market in {first_sold}, made by {inventor}.",
                "The method is credited to {inventor}, who first sold it at market in {first_sold}.",
            ),
        ),
        "colour": Slot(
            ("colour",),
            (
                "It is easily recognised by its {colour} colour.",
                "Its distinctive {colour} tint comes from the traditional method.",
                "Buyers know a genuine piece by its {colour} hue.",
            ),
        ),
        "batch": Slot(
            ("batch",),
            (
                "Making a single batch takes {batch}.",
                "Each batch needs {batch} from start to finish.",
                "Producers spend {batch} on every batch.",
            ),
        ),
        "price": Slot(
            ("price",),
            (
                "At local markets it sells for about {price}.",
                "A portion costs around {price} in the town shops.",
                "Islanders pay roughly {price} for it.",
            ),
        ),
    },
    fillers=(
        "Only a handful of families still make it by hand.",
        "It is often given as a wedding present on the islands.",
        "Shops on the mainland sell it at several times the local price.",
        "The method is passed down within families and rarely written down.",
    ),
    single_core=("what",),
    single_extra=("origin", "colour", "batch", "price"),
    history_core=("origin",),
    history_extra=("colour",),
    today_core=("what",),
    today_extra=("batch", "price"),
    questions={
        "ingredient": ("What is {ref} made from?", "Which raw material is used to make {ref}?"),
        "first_sold": ("In which year could {ref} first be bought?", "When did {ref} first go on sale?"),
        "inventor": ("Who created {ref}?", "Who is said to be the originator of {ref}?"),
        "colour": ("What colour is {ref}?", "Which colour distinguishes genuine {ref}?"),
        "batch": (
            "How long does it take to produce a batch of {ref}?",
            "How many days go into one batch of {ref}?",
        ),
        "price": ("What does {ref} cost locally?", "How much do islanders pay for {ref}?"),
    },
)

FAMILIES: dict[str, FamilySpec] = {
    "island": ISLAND,
    "town": TOWN,
    "cooperative": COOP,
    "festival": FESTIVAL,
    "ferry": FERRY,
    "product": PRODUCT,
}

# --------------------------------------------------------------------------------------------------
# Entities and passages
# --------------------------------------------------------------------------------------------------


@dataclass
class Passage:
    """One corpus passage about one entity."""

    entity: Entity
    title: str
    sentences: list[str]
    facts: tuple[str, ...]  # the askable attributes this passage states
    pid: str = ""

    @property
    def text(self) -> str:
        """The passage body (without its title)."""
        return " ".join(self.sentences)


@dataclass
class Entity:
    """An invented thing of one family, with its attribute values and its passages."""

    family: str
    name: str  # as it appears in questions and titles, without article
    values: dict[str, str]
    group: int  # entities of the same group are sibling distractors
    passages: list[Passage] = field(default_factory=list)


@dataclass
class Question:
    """One question with its short answer and its single gold passage."""

    text: str
    answer: str
    gold: Passage
    attribute: str
    qid: str = ""
    split: str = ""


def base_values(name: str, article: bool, archipelago: str) -> dict[str, str]:
    """The naming values every template may use."""
    ref = f"the {name}" if article else name
    return {"name": name, "ref": ref, "Ref": ref[0].upper() + ref[1:], "archipelago": archipelago}


def distinct_from(
    make: Callable[[], dict[str, str]], other: dict[str, str] | None, keys: Iterable[str]
) -> dict[str, str]:
    """Draw values with ``make`` until none of ``keys`` equals the sibling's value."""
    keys = tuple(keys)
    while True:
        values = make()
        if other is None or all(values[k] != other[k] for k in keys):
            return values


class World:
    """Builds the invented archipelago: entities, then passages, then questions."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.forge = NameForge(self.rng)
        self.archipelago = f"the {self.forge.place()} Isles"
        self.entities: list[Entity] = []
        self._groups = 0

    # -- entities ---------------------------------------------------------------------------------

    def _new_group(self) -> int:
        self._groups += 1
        return self._groups

    def _add(self, family: str, name: str, values: dict[str, str], group: int) -> Entity:
        entity = Entity(family, name, values, group)
        self.entities.append(entity)
        return entity

    def _year(self, low: int, high: int) -> str:
        return str(self.rng.randint(low, high))

    def build_entities(self) -> None:
        """Invent every island, town, cooperative, festival, ferry line and product."""
        rng, forge = self.rng, self.forge
        base = self.archipelago

        # Islands, each with two to four rivers.
        islands: list[dict[str, str]] = []
        rivers: dict[str, list[str]] = {}
        for _ in range(N_ISLANDS):
            name = forge.place()
            rivers[name] = [forge.place() for _ in range(rng.randint(2, 4))]
            islands.append({"name": name})

        # Towns: twin pairs ("North X" / "South X") share an island but not a river.
        town_entities: list[Entity] = []
        town_island: dict[str, str] = {}
        plain_towns: list[str] = []

        def town_maker(name: str, island: str) -> Callable[[], dict[str, str]]:
            def make() -> dict[str, str]:
                return {
                    **base_values(name, False, base),
                    "island": island,
                    "river": rng.choice(rivers[island]),
                    "founded": self._year(1580, 1890),
                    "founder": forge.person(),
                    "population": f"{rng.randint(300, 24000):,}",
                    "export": rng.choice(EXPORTS),
                    "flag": pick_flag(rng),
                    "former": forge.place(),
                    "mayor": forge.person(),
                }

            return make

        island_cycle = [isl["name"] for isl in islands]
        town_keys = ("river", "founded", "population", "export", "flag")
        for i in range(N_TWIN_TOWNS):
            stem = forge.place()
            island = island_cycle[i % N_ISLANDS]
            group = self._new_group()
            first_half, second_half = rng.choice((("North", "South"), ("Upper", "Lower"), ("East", "West")))
            first = town_maker(f"{first_half} {stem}", island)()
            second = distinct_from(town_maker(f"{second_half} {stem}", island), first, town_keys)
            for values in (first, second):
                town_entities.append(self._add("town", values["name"], values, group))
                town_island[values["name"]] = island
        for i in range(N_TOWNS - 2 * N_TWIN_TOWNS):
            name = forge.place()
            island = island_cycle[(i + N_TWIN_TOWNS) % N_ISLANDS]
            values = town_maker(name, island)()
            town_entities.append(self._add("town", name, values, self._new_group()))
            town_island[name] = island
            plain_towns.append(name)
        all_towns = [t.name for t in town_entities]

        for isl in islands:
            name = isl["name"]
            values = {
                **base_values(name, False, base),
                "settled": self._year(1150, 1560),
                "settler": forge.person(),
                "area": f"{rng.randint(18, 640)} square kilometres",
                "peak": rng.choice(PEAK_FORMS).format(forge.place()),
                "height": f"{rng.randint(120, 1450):,} metres",
                "capital": rng.choice([t for t in all_towns if town_island[t] == name]),
                "population": f"{rng.randint(2000, 90000):,}",
                "export": rng.choice(EXPORTS),
                "flag": pick_flag(rng),
            }
            self._add("island", name, values, self._new_group())

        # Cooperatives: "<Town> <Kind> Cooperative"; pairs share a town.
        used_names: set[str] = set()

        def coop_maker(town: str, kind: str) -> Callable[[], dict[str, str]]:
            name = f"{town} {kind} Cooperative"

            def make() -> dict[str, str]:
                return {
                    **base_values(name, True, base),
                    "town": town,
                    "founded": self._year(1820, 1960),
                    "founder": forge.person(),
                    "members": str(rng.randint(18, 640)),
                    "product": rng.choice(COOP_KINDS[kind]),
                    "emblem_colour": rng.choice(COLOURS),
                    "emblem_thing": rng.choice(EMBLEM_THINGS),
                    "weekday": rng.choice(WEEKDAYS),
                    "hall": f"{forge.place()} {rng.choice(HALL_KINDS)}",
                }

            return make

        coop_keys = ("founded", "members", "emblem_colour", "weekday")
        kinds = list(COOP_KINDS)
        for _ in range(N_COOP_PAIRS):
            town = rng.choice(all_towns)
            kind_a, kind_b = rng.sample(kinds, 2)
            if f"{town} {kind_a} Cooperative" in used_names or f"{town} {kind_b} Cooperative" in used_names:
                continue
            group = self._new_group()
            first = coop_maker(town, kind_a)()
            second = distinct_from(coop_maker(town, kind_b), first, coop_keys)
            for values in (first, second):
                used_names.add(values["name"])
                self._add("cooperative", values["name"], values, group)
        while sum(e.family == "cooperative" for e in self.entities) < N_COOPS:
            town, kind = rng.choice(all_towns), rng.choice(kinds)
            if f"{town} {kind} Cooperative" in used_names:
                continue
            values = coop_maker(town, kind)()
            used_names.add(values["name"])
            self._add("cooperative", values["name"], values, self._new_group())

        # Festivals: "<Town> <Theme> Festival"; pairs are "<Town> <Season> <Theme> Festival".
        def festival_maker(name: str, season: str | None = None) -> Callable[[], dict[str, str]]:
            months = SEASONS[season] if season else MONTHS

            def make() -> dict[str, str]:
                decor = rng.choice(DECOR)
                return {
                    **base_values(name, True, base),
                    "date": f"{rng.randint(1, 28)} {rng.choice(months)}",
                    "founded": self._year(1700, 1980),
                    "founder": forge.person(),
                    "duration": f"{rng.choice(NUMBER_WORDS)} days",
                    "dish": f"{forge.word(2, 2)} {rng.choice(DISH_KINDS)}",
                    "colour": rng.choice(COLOURS),
                    "decor": decor,
                    "Decor": decor.capitalize(),
                    "event": rng.choice(EVENTS),
                }

            return make

        festival_keys = ("date", "founded", "duration", "colour", "event")
        for _ in range(N_FESTIVAL_PAIRS):
            town, theme = rng.choice(all_towns), rng.choice(FESTIVAL_THEMES)
            season_a, season_b = rng.sample(list(SEASONS), 2)
            name_a = f"{town} {season_a} {theme} Festival"
            name_b = f"{town} {season_b} {theme} Festival"
            if name_a in used_names or name_b in used_names:
                continue
            group = self._new_group()
            first = festival_maker(name_a, season_a)()
            second = distinct_from(festival_maker(name_b, season_b), first, festival_keys)
            second["decor"], second["Decor"] = first["decor"], first["Decor"]
            for values in (first, second):
                used_names.add(values["name"])
                self._add("festival", values["name"], values, group)
        while sum(e.family == "festival" for e in self.entities) < N_FESTIVALS:
            name = f"{rng.choice(all_towns)} {rng.choice(FESTIVAL_THEMES)} Festival"
            if name in used_names:
                continue
            used_names.add(name)
            self._add("festival", name, festival_maker(name)(), self._new_group())

        # Ferry lines between one-word towns on different islands; pairs add a "Night Ferry".
        def ferry_maker(origin: str, dest: str, night: bool) -> Callable[[], dict[str, str]]:
            name = f"{origin}-{dest} {'Night ' if night else ''}Ferry"

            def make() -> dict[str, str]:
                hour = rng.randint(19, 23) if night else rng.randint(5, 11)
                return {
                    **base_values(name, True, base),
                    "origin": origin,
                    "dest": dest,
                    "opened": self._year(1880, 1995),
                    "departure": f"{hour:02d}:{rng.randrange(0, 60, 5):02d}",
                    "minutes": f"{rng.randrange(25, 245, 5)} minutes",
                    "vessel": forge.place(),
                    "hull": rng.choice(COLOURS),
                    "captain": forge.person(),
                    "fare": f"{rng.randint(2, 45)} crowns",
                }

            return make

        def ferry_pair() -> tuple[str, str]:
            while True:
                origin, dest = rng.sample(plain_towns, 2)
                if town_island[origin] != town_island[dest] and f"{origin}-{dest} Ferry" not in used_names:
                    return origin, dest

        ferry_keys = ("opened", "minutes", "hull", "fare")
        for _ in range(N_FERRY_PAIRS):
            origin, dest = ferry_pair()
            group = self._new_group()
            first = ferry_maker(origin, dest, False)()
            second = distinct_from(ferry_maker(origin, dest, True), first, ferry_keys)
            for values in (first, second):
                used_names.add(values["name"])
                self._add("ferry", values["name"], values, group)
        while sum(e.family == "ferry" for e in self.entities) < N_FERRIES:
            origin, dest = ferry_pair()
            values = ferry_maker(origin, dest, False)()
            used_names.add(values["name"])
            self._add("ferry", values["name"], values, self._new_group())

        # Products: "<Town> <word>"; pairs share the word and the category but not the town.
        def product_maker(town: str, word: str, category: str) -> Callable[[], dict[str, str]]:
            name = f"{town} {word}"

            def make() -> dict[str, str]:
                return {
                    **base_values(name, False, base),
                    "town": town,
                    "category": category,
                    "ingredient": rng.choice(PRODUCT_KINDS[category]),
                    "first_sold": self._year(1650, 1950),
                    "inventor": forge.person(),
                    "colour": rng.choice(COLOURS),
                    "batch": f"{rng.randint(2, 40)} days",
                    "price": f"{rng.randint(2, 60)} crowns",
                }

            return make

        categories = list(PRODUCT_KINDS)
        product_keys = ("ingredient", "first_sold", "colour", "batch", "price")
        for _ in range(N_PRODUCT_PAIRS):
            word, category = forge.word(2, 3), rng.choice(categories)
            town_a, town_b = rng.sample(all_towns, 2)
            group = self._new_group()
            first = product_maker(town_a, word, category)()
            second = distinct_from(product_maker(town_b, word, category), first, product_keys)
            for values in (first, second):
                self._add("product", values["name"], values, group)
        while sum(e.family == "product" for e in self.entities) < N_PRODUCTS:
            values = product_maker(rng.choice(all_towns), forge.word(2, 3), rng.choice(categories))()
            self._add("product", values["name"], values, self._new_group())

    # -- passages ---------------------------------------------------------------------------------

    def _layout(self, spec: FamilySpec, two: bool) -> list[tuple[str, list[str]]]:
        """Choose, per passage, its kind and its slots (the first slot opens the passage)."""
        parts = (
            [
                ("history", spec.history_core, spec.history_extra, 2),
                ("today", spec.today_core, spec.today_extra, 2),
            ]
            if two
            else [("single", spec.single_core, spec.single_extra, 2)]
        )
        layout = []
        for kind, core, extra, k_min in parts:
            slots = list(core)
            self.rng.shuffle(slots)
            room = min(3, len(extra), MAX_SENTENCES - len(slots))
            slots += self.rng.sample(list(extra), self.rng.randint(min(k_min, room), room))
            layout.append((kind, slots))
        return layout

    def _plan(self, spec: FamilySpec, slots: list[str]) -> list[tuple[str | None, str]]:
        """Pick a template per slot; an opening sentence always names the entity."""
        plan: list[tuple[str | None, str]] = []
        for i, slot_name in enumerate(slots):
            options = [t for t in spec.slots[slot_name].templates if i > 0 or names_entity(t)]
            plan.append((slot_name, self.rng.choice(options)))
        return plan

    def _fill(self, spec: FamilySpec, plan: list[tuple[str | None, str]], values: dict[str, str]) -> None:
        """Add filler sentences (no facts) until the passage is long enough."""
        unused = [f for f in spec.fillers if all(f != t for _, t in plan)]
        self.rng.shuffle(unused)
        while word_count(render(plan, values)) < MIN_WORDS and len(plan) < MAX_SENTENCES and unused:
            if len(plan) == MAX_SENTENCES - 1:  # the last free place: take the longest filler
                unused.sort(key=lambda f: word_count(f.format(**values)))
            plan.insert(self.rng.randint(1, len(plan)), (None, unused.pop()))

    def build_passages(self) -> list[Passage]:
        """Write the passages; siblings reuse the same layout and phrasing with their own values."""
        groups: dict[int, list[Entity]] = {}
        for entity in self.entities:
            groups.setdefault(entity.group, []).append(entity)
        passages: list[Passage] = []
        for members in groups.values():
            spec = FAMILIES[members[0].family]
            two = self.rng.random() < TWO_PASSAGE_SHARE
            layout = self._layout(spec, two)
            plans = [self._plan(spec, slots) for _, slots in layout]
            for entity in members:
                for (kind, _), shared_plan in zip(layout, plans, strict=True):
                    plan = list(shared_plan)
                    self._fill(spec, plan, entity.values)
                    values = entity.values
                    title = {"single": values["name"], "history": f"History of {values['ref']}"}.get(
                        kind, f"{values['Ref']} today"
                    )
                    facts = tuple(k for slot, _ in plan if slot for k in spec.slots[slot].keys)
                    passage = Passage(entity, title, [t.format(**entity.values) for _, t in plan], facts)
                    entity.passages.append(passage)
                    passages.append(passage)
        self.rng.shuffle(passages)
        for i, passage in enumerate(passages, 1):
            passage.pid = f"p{i:04d}"
        return passages

    # -- questions --------------------------------------------------------------------------------

    def _confusable(self, entity: Entity, passages: list[Passage]) -> list[Passage]:
        """Passages other than the gold one that must not contain the answer: the entity's own
        passages, its siblings' passages and any passage whose title contains the entity's name."""
        return [
            p
            for p in passages
            if p.entity is entity or p.entity.group == entity.group or contains(p.title, entity.name)
        ]

    def build_questions(self, passages: list[Passage]) -> list[Question]:
        """Ask one question about each of a random subset of entities (all two-passage ones included)."""
        entities = list(self.entities)
        self.rng.shuffle(entities)
        entities.sort(key=lambda e: -len(e.passages))  # ask about every two-passage entity first
        questions: list[Question] = []
        asked: dict[tuple[str, str], int] = {}  # (family, attribute) -> questions so far
        for entity in entities:
            if len(questions) == N_QUESTIONS:
                break
            spec = FAMILIES[entity.family]
            candidates = [(p, a) for p in entity.passages for a in p.facts if a in spec.questions]
            self.rng.shuffle(candidates)
            # Prefer the attributes asked least so far, so that questions cover every attribute.
            candidates.sort(key=lambda c: asked.get((entity.family, c[1]), 0))
            confusable = self._confusable(entity, passages)
            for gold, attribute in candidates:
                answer = entity.values[attribute]
                text = self.rng.choice(spec.questions[attribute]).format(**entity.values)
                text = text[0].upper() + text[1:]
                if not contains(gold.text, answer) or contains(text, answer):
                    continue
                if any(contains(p.title + " " + p.text, answer) for p in confusable if p is not gold):
                    continue
                questions.append(Question(text, answer, gold, attribute))
                asked[entity.family, attribute] = asked.get((entity.family, attribute), 0) + 1
                break
        self.rng.shuffle(questions)
        for i, question in enumerate(questions, 1):
            question.qid = f"q{i:04d}"
        order = list(questions)
        self.rng.shuffle(order)
        n_train = round(TRAIN_SHARE * len(order))
        for i, question in enumerate(order):
            question.split = "train" if i < n_train else "test"
        return questions


def names_entity(template: str) -> bool:
    """Whether a template names its entity (so it may open a passage)."""
    return "{ref}" in template or "{Ref}" in template


def render(plan: list[tuple[str | None, str]], values: dict[str, str]) -> str:
    """The text of a passage plan filled with an entity's values."""
    return " ".join(t.format(**values) for _, t in plan)


def word_count(text: str) -> int:
    """Whitespace-separated words in ``text``."""
    return len(text.split())


def contains(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as a whole token sequence (so '210' is not in '4,210')."""
    pattern = r"(?<![\w,.:'-])" + re.escape(phrase) + r"(?![\w'-]|[,.:]\w)"
    return re.search(pattern, text) is not None


# --------------------------------------------------------------------------------------------------
# Checks and output
# --------------------------------------------------------------------------------------------------


def validate(passages: list[Passage], questions: list[Question]) -> None:
    """Raise ``ValueError`` if the dataset breaks any of its design rules."""
    problems: list[str] = []
    if not CORPUS_RANGE[0] <= len(passages) <= CORPUS_RANGE[1]:
        problems.append(f"{len(passages)} passages, expected {CORPUS_RANGE}")
    if not QUESTION_RANGE[0] <= len(questions) <= QUESTION_RANGE[1]:
        problems.append(f"{len(questions)} questions, expected {QUESTION_RANGE}")
    titles = [p.title for p in passages]
    if len(set(titles)) != len(titles):
        problems.append("duplicate passage titles")
    for p in passages:
        n_words = word_count(p.text)
        if not MIN_WORDS <= n_words <= MAX_WORDS:
            problems.append(f"{p.pid} ({p.title}): {n_words} words")
        if not MIN_SENTENCES <= len(p.sentences) <= MAX_SENTENCES:
            problems.append(f"{p.pid} ({p.title}): {len(p.sentences)} sentences")
        if not contains(p.text, p.entity.name):
            problems.append(f"{p.pid} ({p.title}): entity name missing from text")
        if "{" in p.text or "}" in p.text:
            problems.append(f"{p.pid}: unfilled template")
    for q in questions:
        if not contains(q.gold.text, q.answer):
            problems.append(f"{q.qid}: answer {q.answer!r} not in gold passage {q.gold.pid}")
        if q.gold.entity.name not in q.text:
            problems.append(f"{q.qid}: entity name missing from question")
    if problems:
        raise ValueError("invalid dataset:\n  " + "\n  ".join(problems))


def write_atomic(path: Path, content: str) -> None:
    """Write ``content`` to a temporary file beside ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def jsonl(rows: Iterable[dict[str, object]]) -> str:
    """Rows as JSON Lines text."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_dataset(out: Path, passages: list[Passage], questions: list[Question]) -> None:
    """Write the corpus, queries, qrels and QA files into ``out``."""
    by_pid = sorted(passages, key=lambda p: p.pid)
    by_qid = sorted(questions, key=lambda q: q.qid)
    write_atomic(
        out / "corpus.jsonl", jsonl({"_id": p.pid, "title": p.title, "text": p.text} for p in by_pid)
    )
    write_atomic(out / "queries.jsonl", jsonl({"_id": q.qid, "text": q.text} for q in by_qid))
    for split in ("train", "test"):
        rows = [f"{q.qid}\t{q.gold.pid}\t1\n" for q in by_qid if q.split == split]
        write_atomic(out / "qrels" / f"{split}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(rows))

    def qa_rows(split: str | None):
        return jsonl(
            {
                "id": q.qid,
                "question": q.text,
                "answer": q.answer,
                "contexts": [q.gold.pid],
                "positive_ids": [q.gold.pid],
                "split": q.split,
            }
            for q in by_qid
            if split is None or q.split == split
        )

    write_atomic(out / "qa.jsonl", qa_rows(None))
    for split in ("train", "test"):  # the layout `ragtune data convert` writes: qa_<split>.jsonl
        write_atomic(out / f"qa_{split}.jsonl", qa_rows(split))


def main(argv: list[str] | None = None) -> int:
    """Build, check and write the dataset; print a one-line summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    args = parser.parse_args(argv)
    world = World(SEED)
    world.build_entities()
    passages = world.build_passages()
    questions = world.build_questions(passages)
    validate(passages, questions)
    write_dataset(args.out, passages, questions)
    n_train = sum(q.split == "train" for q in questions)
    print(
        f"{world.archipelago}: {len(world.entities)} entities, {len(passages)} passages, "
        f"{len(questions)} questions ({n_train} train / {len(questions) - n_train} test) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
