"""The shop the generator plants: category tree, brands, words, prices, demographics.

Every number here is part of the *true structure* documented in docs/data-generator.md.
``age`` and ``female`` are preference shifts in logits: ``age`` per +10 years above 38,
``female`` added for gender F and subtracted for M. ``cycle_days`` > 0 marks a
consumable that shoppers buy again roughly every that many days.

One concept in one file, although past 450 lines: it is the planted vocabulary, mostly
tables of data, kept together so the documentation's tables can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Leaf:
    path: str
    nouns: tuple[str, ...]
    brands: tuple[str, ...]
    features: tuple[str, ...]
    median_price: float
    price_sigma: float
    weight: float
    age: float = 0.0
    female: float = 0.0
    cycle_days: float = 0.0
    noun_price: tuple[float, ...] = (1.0, 1.0, 1.0)  # price factor of each noun vs the leaf median

    @property
    def consumable(self) -> bool:
        return self.cycle_days > 0


LEAVES: tuple[Leaf, ...] = (
    Leaf(
        "Electronics/Phones",
        ("smartphone", "phone case", "wireless charger"),
        ("Novaline", "Pixelon", "Orbit", "Zentek", "Kairo"),
        ("battery", "camera", "display", "storage"),
        220.0,
        0.6,
        1.3,
        age=-0.35,
        female=-0.1,
        noun_price=(2.2, 0.12, 0.2),
    ),
    Leaf(
        "Electronics/Laptops",
        ("laptop", "notebook stand", "laptop sleeve"),
        ("Corebook", "Zentek", "Lumira", "Averon"),
        ("processor", "keyboard", "battery", "screen"),
        640.0,
        0.5,
        0.8,
        age=-0.1,
        female=-0.3,
        noun_price=(1.6, 0.07, 0.05),
    ),
    Leaf(
        "Electronics/Headphones",
        ("headphones", "earbuds", "headset"),
        ("Sonique", "Pixelon", "Beatwave", "Auralis"),
        ("noise cancelling", "bass", "bluetooth", "microphone"),
        85.0,
        0.7,
        1.1,
        age=-0.5,
        female=-0.1,
    ),
    Leaf(
        "Electronics/Cameras",
        ("camera", "lens", "tripod"),
        ("Optica", "Lumira", "Fotex"),
        ("sensor", "zoom", "stabilization", "lens"),
        380.0,
        0.6,
        0.5,
        age=0.2,
        female=-0.25,
        noun_price=(1.5, 0.8, 0.15),
    ),
    Leaf(
        "Electronics/Smart Home",
        ("smart speaker", "smart bulb", "security camera"),
        ("Homiq", "Orbit", "Nestra"),
        ("voice control", "wifi", "app", "automation"),
        60.0,
        0.6,
        0.7,
        age=0.0,
        female=-0.2,
        noun_price=(1.4, 0.35, 1.5),
    ),
    Leaf(
        "Home/Kitchen",
        ("frying pan", "blender", "knife set"),
        ("Cucina", "Ferro", "Kitchenly", "Brava"),
        ("nonstick", "stainless steel", "dishwasher safe", "ergonomic handle"),
        45.0,
        0.6,
        1.0,
        age=0.35,
        female=0.35,
        noun_price=(0.8, 1.5, 1.2),
    ),
    Leaf(
        "Home/Furniture",
        ("desk chair", "bookshelf", "side table"),
        ("Nordhem", "Oakridge", "Lindo"),
        ("solid wood", "easy assembly", "storage", "upholstery"),
        160.0,
        0.6,
        0.6,
        age=0.3,
        female=0.1,
    ),
    Leaf(
        "Home/Bedding",
        ("duvet", "pillow", "bed sheets"),
        ("Sleepwell", "Nordhem", "Cotonia"),
        ("cotton", "hypoallergenic", "breathable", "thread count"),
        55.0,
        0.5,
        0.7,
        age=0.3,
        female=0.4,
    ),
    Leaf(
        "Home/Decor",
        ("vase", "wall art", "scented candle"),
        ("Lindo", "Casa Bella", "Artisana"),
        ("handmade", "ceramic", "frame", "fragrance"),
        30.0,
        0.7,
        0.7,
        age=0.1,
        female=0.6,
    ),
    Leaf(
        "Fashion/Women",
        ("dress", "blouse", "cardigan"),
        ("Velora", "Mira", "Chicane", "Stylo"),
        ("fabric", "fit", "sleeve", "pattern"),
        48.0,
        0.6,
        1.2,
        age=-0.25,
        female=1.4,
    ),
    Leaf(
        "Fashion/Men",
        ("shirt", "jeans", "hoodie"),
        ("Harbor", "Stylo", "Brixton", "Denimco"),
        ("fabric", "fit", "collar", "pocket"),
        45.0,
        0.6,
        1.0,
        age=-0.2,
        female=-1.3,
    ),
    Leaf(
        "Fashion/Shoes",
        ("sneakers", "boots", "sandals"),
        ("Stridex", "Runa", "Harbor", "Velora"),
        ("sole", "cushioning", "leather", "laces"),
        75.0,
        0.5,
        1.1,
        age=-0.3,
        female=0.2,
    ),
    Leaf(
        "Fashion/Accessories",
        ("handbag", "wallet", "sunglasses"),
        ("Mira", "Chicane", "Solis"),
        ("leather", "strap", "compartments", "uv protection"),
        40.0,
        0.8,
        0.8,
        age=-0.1,
        female=0.7,
    ),
    Leaf(
        "Beauty/Skincare",
        ("face cream", "serum", "cleanser"),
        ("Dermique", "Purea", "Glowly", "Aqualis"),
        ("hyaluronic", "spf", "fragrance free", "vitamin c"),
        22.0,
        0.6,
        1.0,
        age=0.15,
        female=1.1,
        cycle_days=40.0,
    ),
    Leaf(
        "Beauty/Makeup",
        ("lipstick", "mascara", "foundation"),
        ("Glowly", "Rougette", "Purea"),
        ("long lasting", "matte", "waterproof", "shade"),
        18.0,
        0.5,
        0.8,
        age=-0.4,
        female=1.6,
    ),
    Leaf(
        "Beauty/Fragrance",
        ("perfume", "eau de toilette", "body mist"),
        ("Essence", "Rougette", "Aromis"),
        ("floral", "woody", "citrus", "long lasting"),
        55.0,
        0.6,
        0.5,
        age=0.0,
        female=0.5,
    ),
    Leaf(
        "Grocery/Coffee",
        ("coffee beans", "ground coffee", "coffee pods"),
        ("Roastery", "Arabica Co", "Beanhaus", "Crema"),
        ("arabica", "dark roast", "fair trade", "aroma"),
        12.0,
        0.4,
        1.1,
        age=0.35,
        female=-0.05,
        cycle_days=18.0,
    ),
    Leaf(
        "Grocery/Snacks",
        ("granola bars", "crackers", "trail mix"),
        ("Crunchy", "Nutrio", "Harvest", "Snackit"),
        ("protein", "gluten free", "whole grain", "flavor"),
        6.0,
        0.4,
        1.0,
        age=-0.3,
        female=0.05,
        cycle_days=10.0,
    ),
    Leaf(
        "Grocery/Beverages",
        ("green tea", "sparkling water", "juice"),
        ("Teavana", "Fizzo", "Harvest"),
        ("organic", "sugar free", "refreshing", "bottle"),
        7.0,
        0.4,
        0.8,
        age=0.1,
        female=0.15,
        cycle_days=14.0,
    ),
    Leaf(
        "Sports/Running",
        ("running shoes", "running shorts", "sports watch"),
        ("Stridex", "Runa", "Velocity"),
        ("cushioning", "breathable", "gps", "lightweight"),
        70.0,
        0.6,
        0.8,
        age=-0.3,
        female=0.0,
    ),
    Leaf(
        "Sports/Cycling",
        ("bike helmet", "bike light", "cycling gloves"),
        ("Velocity", "Pedalo", "Ridgeline"),
        ("visibility", "padding", "aerodynamic", "mount"),
        40.0,
        0.7,
        0.5,
        age=0.0,
        female=-0.5,
    ),
    Leaf(
        "Sports/Fitness",
        ("yoga mat", "dumbbells", "resistance bands"),
        ("Flexo", "Ironcore", "Zenfit"),
        ("grip", "adjustable", "non slip", "workout"),
        35.0,
        0.6,
        0.8,
        age=-0.35,
        female=0.3,
    ),
    Leaf(
        "Sports/Camping",
        ("tent", "sleeping bag", "camping stove"),
        ("Ridgeline", "Trailhead", "Summit"),
        ("waterproof", "insulated", "compact", "setup"),
        95.0,
        0.7,
        0.5,
        age=0.05,
        female=-0.35,
        noun_price=(2.0, 0.8, 0.6),
    ),
    Leaf(
        "Toys/Building Sets",
        ("building set", "construction kit", "marble run"),
        ("Brickly", "Buildo", "Tinkerz"),
        ("pieces", "ages 8+", "instructions", "creative"),
        38.0,
        0.7,
        0.6,
        age=0.25,
        female=-0.1,
    ),
    Leaf(
        "Toys/Board Games",
        ("board game", "card game", "puzzle"),
        ("Gamewell", "Tinkerz", "Puzzlix"),
        ("players", "strategy", "family", "pieces"),
        28.0,
        0.5,
        0.6,
        age=0.1,
        female=0.1,
    ),
    Leaf(
        "Books/Fiction",
        ("novel", "thriller", "fantasy book"),
        ("Penwood Press", "Inkhorn", "Northstar Books"),
        ("paperback", "bestseller", "chapters", "author"),
        14.0,
        0.4,
        0.9,
        age=0.3,
        female=0.45,
    ),
    Leaf(
        "Books/Cookbooks",
        ("cookbook", "baking book", "recipe collection"),
        ("Penwood Press", "Cucina", "Inkhorn"),
        ("recipes", "photography", "vegetarian", "hardcover"),
        24.0,
        0.4,
        0.4,
        age=0.45,
        female=0.55,
    ),
    Leaf(
        "Pets/Dog Food",
        ("dry dog food", "dog treats", "puppy food"),
        ("Pawsome", "Barkly", "Canivo"),
        ("grain free", "protein", "chicken", "kibble"),
        32.0,
        0.5,
        0.7,
        age=0.3,
        female=0.1,
        cycle_days=28.0,
    ),
    Leaf(
        "Pets/Cat Supplies",
        ("cat litter", "scratching post", "cat toy"),
        ("Meowza", "Pawsome", "Felino"),
        ("clumping", "odor control", "sisal", "interactive"),
        20.0,
        0.6,
        0.6,
        age=0.2,
        female=0.3,
    ),
    Leaf(
        "Baby/Diapers",
        ("diapers", "baby wipes", "diaper cream"),
        ("Cuddle", "Babysoft", "Tendera"),
        ("absorbent", "sensitive skin", "size", "fragrance free"),
        25.0,
        0.3,
        0.6,
        age=-0.1,
        female=0.5,
        cycle_days=12.0,
    ),
    Leaf(
        "Baby/Gear",
        ("stroller", "baby carrier", "high chair"),
        ("Cuddle", "Strollo", "Tendera"),
        ("foldable", "safety", "adjustable", "padded"),
        150.0,
        0.6,
        0.4,
        age=-0.15,
        female=0.4,
        noun_price=(2.0, 0.6, 0.8),
    ),
)

# Synonyms a shopper may type instead of the catalog noun; the baseline search
# engine in the generator matches only catalog words, so these queries rank worse.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "smartphone": ("mobile phone", "cell phone"),
    "phone case": ("phone cover",),
    "wireless charger": ("charging pad",),
    "laptop": ("notebook computer",),
    "headphones": ("cans",),
    "earbuds": ("in-ear headphones",),
    "camera": ("digicam",),
    "smart speaker": ("voice assistant speaker",),
    "frying pan": ("skillet",),
    "knife set": ("kitchen knives",),
    "desk chair": ("office chair",),
    "bookshelf": ("bookcase",),
    "duvet": ("comforter",),
    "bed sheets": ("bedsheet set",),
    "wall art": ("poster",),
    "dress": ("gown",),
    "cardigan": ("sweater",),
    "hoodie": ("sweatshirt",),
    "jeans": ("denim pants",),
    "sneakers": ("trainers", "tennis shoes"),
    "handbag": ("purse",),
    "face cream": ("moisturizer",),
    "perfume": ("fragrance",),
    "coffee beans": ("whole bean coffee",),
    "granola bars": ("cereal bars",),
    "sparkling water": ("soda water",),
    "running shoes": ("jogging shoes",),
    "bike helmet": ("bicycle helmet",),
    "dumbbells": ("hand weights",),
    "sleeping bag": ("sleep sack",),
    "building set": ("building blocks",),
    "novel": ("fiction book",),
    "cookbook": ("recipe book",),
    "dry dog food": ("dog kibble",),
    "cat litter": ("kitty litter",),
    "diapers": ("nappies",),
    "stroller": ("pram", "pushchair"),
}

# One word pair per latent taste dimension: an item's strongest dimensions name its
# style in the title and description, so text similarity carries taste signal.
STYLE_WORDS: tuple[tuple[str, str], ...] = (
    ("premium", "budget"),
    ("classic", "modern"),
    ("eco-friendly", "high-performance"),
    ("minimalist", "colorful"),
    ("professional", "everyday"),
    ("lightweight", "heavy-duty"),
    ("vintage", "smart"),
    ("luxury", "basic"),
)

COLORS: tuple[str, ...] = (
    "black",
    "white",
    "grey",
    "navy",
    "red",
    "green",
    "beige",
    "blue",
    "pink",
    "silver",
    "brown",
    "olive",
)

REGIONS: tuple[str, ...] = (
    "North",
    "South",
    "East",
    "West",
    "Central",
    "Coast",
    "Mountain",
    "Capital",
)
REGION_WEIGHTS: tuple[float, ...] = (0.14, 0.16, 0.12, 0.13, 0.11, 0.12, 0.07, 0.15)

# Relative session volume by weekday (Monday first) and by hour of day (UTC).
WEEKDAY_WEIGHTS: tuple[float, ...] = (0.92, 0.90, 0.94, 0.97, 1.05, 1.22, 1.18)
HOUR_WEIGHTS: tuple[float, ...] = (
    0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.55, 0.75, 0.85, 0.90, 0.95,
    1.00, 1.00, 0.95, 0.95, 1.00, 1.10, 1.30, 1.55, 1.70, 1.60, 1.20, 0.60,
)  # fmt: skip

USE_PHRASES: tuple[str, ...] = (
    "daily use",
    "gifts",
    "home",
    "travel",
    "beginners",
    "enthusiasts",
    "families",
    "the office",
)


def leaf_table_markdown() -> str:
    """The planted category table as markdown (docs/data-generator.md embeds it; a test keeps them equal)."""
    lines = [
        "| leaf category | nouns (price factor) | median price | σ (log) | weight | age shift | female shift | reorder cycle (days) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for leaf in LEAVES:
        nouns = ", ".join(
            f"{n} ({f:g})" if f != 1.0 else n
            for n, f in zip(leaf.nouns, leaf.noun_price, strict=True)
        )
        lines.append(
            f"| `{leaf.path}` | {nouns} | {leaf.median_price:g} | {leaf.price_sigma:g} | {leaf.weight:g} "
            f"| {leaf.age:+g} | {leaf.female:+g} | {leaf.cycle_days:g} |"
        )
    return "\n".join(lines)
