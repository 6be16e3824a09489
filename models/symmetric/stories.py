"""Seeded story generator: short stories whose sentences each state one fact (entity, relation, value).

A story has 2-5 sentences about a small cast. Each sentence picks a cast member, a relation, a
value from that relation's own value set and one of the relation's surface forms:

    alice is in the kitchen          -> (alice, location, kitchen)
    the living room is where alice is -> (alice, location, living room)
    uncle bram works as social researcher -> (uncle bram, job, social researcher)

Entity names are made up from syllables (seeded), so a split by story holds names never seen in
training; some carry a title ("doctor", "aunt") and some a surname, so entities span 1-3 words.
Several values are multi-word ("new york", "social researcher", "twenty one").

At ``num_stories=1000`` this yields about 3,000 sentences, a vocabulary of about 1,500 words and
about 500 entities (``tests/models/test_symmetric_stories.py`` pins these figures).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Multi-word values are written with "_" here and spaced out when used.
_PLACES = """kitchen garden bathroom bedroom hallway office cellar attic library garage balcony porch
living_room dining_room spare_room classroom gym bakery market station harbour museum cinema theatre
church temple hospital pharmacy bank school university park forest beach meadow barn stable farm
orchard vineyard mill factory warehouse lighthouse castle tower cave island village square
train_station bus_stop post_office police_station fire_station town_hall coffee_shop book_shop
playground stadium zoo aquarium airport laboratory studio workshop chapel courtyard greenhouse"""
_OBJECTS = """ball box book pen pencil cup mug bottle key lamp candle hat scarf glove umbrella bag basket
bucket hammer wrench ladder rope map compass clock watch phone camera radio kettle spoon fork knife
plate bowl blanket pillow mirror brush comb ticket coin wallet letter envelope parcel notebook
tennis_racket paper_bag silver_key red_ball old_map shovel rake torch whistle flag helmet mask jar
vase tray bell badge ring necklace bracelet stapler kite puzzle toolbox suitcase backpack
water_bottle alarm_clock picture_frame"""
_COLOURS = """red blue green yellow purple orange pink brown black white grey gold silver violet indigo
turquoise crimson scarlet maroon beige cream ivory teal lilac magenta amber dark_blue light_green
pale_yellow bright_red deep_purple navy_blue olive_green sky_blue"""
_JOBS = """teacher doctor nurse engineer farmer baker butcher carpenter plumber electrician pilot sailor
soldier lawyer judge banker dentist chemist pharmacist painter sculptor writer poet journalist editor
librarian cashier waiter chef cook gardener mechanic driver tailor potter miner fisher hunter shepherd
musician singer dancer actor director architect surveyor accountant social_researcher data_analyst
bus_driver police_officer fire_fighter web_designer software_developer flight_attendant
shop_assistant research_scientist civil_servant truck_driver head_chef night_nurse vet_surgeon
tax_advisor"""
_ANIMALS = """cat dog rabbit hamster parrot goldfish turtle tortoise horse pony goat sheep pig cow
chicken duck goose mouse rat ferret lizard snake frog canary budgie guinea_pig stick_insect
hermit_crab donkey llama alpaca hedgehog owl"""
_FOODS = """bread cheese soup pasta pizza rice noodles salad curry stew porridge pancakes waffles cake
pie cookies biscuits chocolate toast eggs bacon sausages chips sushi tacos burritos dumplings omelette
lasagne risotto apple_pie chicken_curry tomato_soup fried_rice roast_beef mashed_potatoes ice_cream
fruit_salad carrot_cake lemon_tart beef_stew veggie_burger cheese_sandwich"""
_INSTRUMENTS = """piano guitar violin cello flute trumpet drums harp clarinet saxophone trombone oboe
bassoon banjo ukulele accordion harmonica mandolin organ tuba xylophone bass_guitar french_horn
double_bass bagpipes"""
_SPORTS = """football tennis cricket rugby hockey golf swimming running cycling rowing sailing boxing
fencing archery skiing snowboarding surfing climbing badminton volleyball basketball baseball
handball judo karate wrestling gymnastics table_tennis ice_hockey water_polo horse_riding long_jump
high_jump"""
_LANGUAGES = """english french german spanish italian portuguese dutch swedish norwegian danish finnish
polish czech greek turkish russian arabic hebrew hindi bengali urdu chinese japanese korean thai
vietnamese indonesian malay swahili zulu welsh irish latin hungarian romanian ukrainian persian
tamil sign_language"""
_CITIES = """london paris berlin madrid rome vienna prague warsaw lisbon dublin oslo stockholm helsinki
athens cairo lagos nairobi tokyo seoul beijing shanghai delhi mumbai sydney melbourne toronto
montreal chicago boston denver seattle new_york los_angeles san_francisco hong_kong buenos_aires
rio_de_janeiro mexico_city cape_town new_delhi tel_aviv kuala_lumpur las_vegas new_orleans
st_petersburg abu_dhabi"""
_UNITS = "one two three four five six seven eight nine".split()
_TEENS = ("ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_AGES = _TEENS[6:] + [t + ("" if u is None else " " + u) for t in _TENS for u in [None, *_UNITS]]

_STREETS = "street road lane avenue".split()
_TITLES = "doctor uncle aunt captain professor miss mister old little sister brother".split()
_ONSETS = "b br c ch d dr f fl g gr h j k l m n p pr r s sh st t tr v w y z".split()
_VOWELS = "a e i o u a e i o ai ea ie oo ou".split()
_CODAS = ["", "", "", "n", "l", "r", "s", "th", "m", "nd", "x", "k"]


def _values(text: str) -> tuple[str, ...]:
    return tuple(w.replace("_", " ") for w in text.split())


# relation -> (surface forms, values). {e} is the entity, {v} the value. "friend" takes other
# entities and "address" made-up streets, both drawn per data set (values None here).
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "location": (("{e} is in the {v}", "{e} went to the {v}", "the {v} is where {e} is",
                  "{e} walked into the {v}"), _values(_PLACES)),
    "holding": (("{e} picked up the {v}", "{e} is holding the {v}", "the {v} was taken by {e}"),
                _values(_OBJECTS)),
    "colour": (("{e} likes the colour {v}", "the favourite colour of {e} is {v}",
                "{e} always wears {v}"), _values(_COLOURS)),
    "age": (("{e} is {v} years old", "the age of {e} is {v}", "{e} just turned {v}"), tuple(_AGES)),
    "job": (("{e} works as {v}", "{e} is employed as {v}", "the job of {e} is {v}"), _values(_JOBS)),
    "friend": (("{e} knows {v}", "{e} is a friend of {v}", "{v} and {e} are friends",
                "{e} often visits {v}"), None),
    "pet": (("{e} has a pet {v}", "{e} owns a {v}", "the pet of {e} is a {v}"), _values(_ANIMALS)),
    "food": (("{e} likes to eat {v}", "the favourite food of {e} is {v}", "{e} had {v} for dinner"),
             _values(_FOODS)),
    "instrument": (("{e} plays the {v}", "{e} is learning the {v}", "the {v} is played by {e}"),
                   _values(_INSTRUMENTS)),
    "sport": (("{e} is good at {v}", "{e} practises {v} every day", "{v} is the sport of {e}"),
              _values(_SPORTS)),
    "language": (("{e} speaks {v}", "{v} is spoken by {e}", "{e} is learning to speak {v}"),
                 _values(_LANGUAGES)),
    "hometown": (("{e} was born in {v}", "{e} comes from {v}", "the home town of {e} is {v}"),
                 _values(_CITIES)),
    "address": (("{e} lives on {v}", "the address of {e} is {v}", "{e} has a house on {v}"), None),
}

# Sentences per story: 2-5, mean about 3 (so 1000 stories give about 3,000 sentences).
_LENGTHS, _LENGTH_WEIGHTS = (2, 3, 4, 5), (0.35, 0.35, 0.2, 0.1)


@dataclass(frozen=True)
class Story:
    """Sentences and their facts, one fact (entity, relation, value) per sentence."""
    sentences: tuple[str, ...]
    facts: tuple[tuple[str, str, str], ...]


def _reserved_words() -> set[str]:
    words = set(_TITLES) | set(_STREETS)
    for forms, values in RELATIONS.values():
        for form in forms:
            words.update(w for w in form.split() if not w.startswith("{"))
        for value in values or ():
            words.update(value.split())
    return words


def _name(rng: random.Random) -> str:
    syllables = rng.choice((2, 2, 2, 3))
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables - 1)) + \
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _names(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        name = _name(rng)
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def entity_pool(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """``count`` distinct entity names: 45% a single name, 15% titled, 40% with a surname."""
    firsts = _names(rng, count, taken)
    surnames = _names(rng, count, taken)
    out = []
    for first in firsts:
        kind = rng.random()
        if kind < 0.15:
            out.append(f"{rng.choice(_TITLES)} {first}")
        elif kind < 0.55:
            out.append(f"{first} {rng.choice(surnames)}")
        else:
            out.append(first)
    return out


def street_pool(rng: random.Random, count: int, taken: set[str]) -> tuple[str, ...]:
    """``count`` made-up street names ("brodal lane"): a value set that grows with the data."""
    return tuple(f"{name} {rng.choice(_STREETS)}" for name in _names(rng, count, taken))


def generate_stories(num_stories: int, seed: int) -> list[Story]:
    """``num_stories`` stories; the same (num_stories, seed) gives the same stories."""
    rng = random.Random(seed)
    taken = _reserved_words()
    pool = entity_pool(rng, max(4, round(num_stories * 0.52)), taken)
    streets = street_pool(rng, max(2, num_stories // 2), taken)
    relations = list(RELATIONS)
    stories = []
    for _ in range(num_stories):
        cast = rng.sample(pool, rng.choice((1, 2, 2, 3)))
        sentences, facts = [], []
        for _ in range(rng.choices(_LENGTHS, _LENGTH_WEIGHTS)[0]):
            entity = rng.choice(cast)
            relation = rng.choice(relations)
            forms, values = RELATIONS[relation]
            if relation == "friend":  # another entity, never the subject itself
                value = rng.choice([p for p in (cast + rng.sample(pool, 2)) if p != entity])
            elif relation == "address":
                value = rng.choice(streets)
            else:
                value = rng.choice(values)
            sentences.append(rng.choice(forms).format(e=entity, v=value))
            facts.append((entity, relation, value))
        stories.append(Story(tuple(sentences), tuple(facts)))
    return stories


def split_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) story counts of ``split_stories``; train may be 0 or less (refused)."""
    n_val = max(1, round(count * val_fraction))
    n_test = max(1, round(count * test_fraction))
    return count - n_val - n_test, n_val, n_test


def split_stories(stories: list[Story], val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[list[Story], list[Story], list[Story]]:
    """Shuffle (seeded) and split by story, so no story has sentences in two splits."""
    order = list(range(len(stories)))
    random.Random(seed + 1).shuffle(order)
    _, n_val, n_test = split_sizes(len(stories), val_fraction, test_fraction)
    val = [stories[i] for i in order[:n_val]]
    test = [stories[i] for i in order[n_val:n_val + n_test]]
    train = [stories[i] for i in order[n_val + n_test:]]
    return train, val, test
