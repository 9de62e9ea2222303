"""Readable names and a natural order for the user features the web page offers.

The data keeps features as the files code them: ML-1M's occupation is a number 0-20,
its age groups are labels that sort "Under 18" last as text, and zip1 is the first
character of the zip code. A person choosing their own demographics needs names, in
the order of the thing they describe. The values sent back stay the data's own codes.
"""

from __future__ import annotations

import re

# MovieLens 1M README, "User information": occupation codes
ML1M_OCCUPATIONS = {
    "0": "other or not specified",
    "1": "academic/educator",
    "2": "artist",
    "3": "clerical/admin",
    "4": "college/grad student",
    "5": "customer service",
    "6": "doctor/health care",
    "7": "executive/managerial",
    "8": "farmer",
    "9": "homemaker",
    "10": "K-12 student",
    "11": "lawyer",
    "12": "programmer",
    "13": "retired",
    "14": "sales/marketing",
    "15": "scientist",
    "16": "self-employed",
    "17": "technician/engineer",
    "18": "tradesman/craftsman",
    "19": "unemployed",
    "20": "writer",
}
FEATURE_NAMES = {
    "age": "Age",
    "gender": "Gender",
    "occupation": "Occupation",
    "zip1": "ZIP code starts with",
}
GENDERS = {"F": "female", "M": "male"}


def feature_label(name: str) -> str:
    return FEATURE_NAMES.get(name, name.replace("_", " ").capitalize())


def order_key(value: str) -> tuple:
    """Numbers by value and ranges by their lower end ("Under 18" < "18-24" < "56+"),
    then everything else alphabetically."""
    if re.match(r"under\b", value, re.IGNORECASE):
        return (0, float("-inf"), value)
    m = re.match(r"\d+(\.\d+)?", value)
    if m:
        return (0, float(m.group()), value)
    return (1, 0.0, value.casefold())


def choices(name: str, values: list[str], data_set: str) -> list[dict[str, str]]:
    """[{value, label}] in display order for one feature of one data set."""
    names: dict[str, str] = {}
    if name == "occupation" and data_set.startswith("ml-1m"):
        names = ML1M_OCCUPATIONS  # ML-100K already names its occupations
    elif name == "gender" and set(values) <= set(GENDERS):
        names = GENDERS
    elif name == "zip1":
        names = {v: f"{v}…" for v in values}
    # codes in their own order: the MovieLens README lists occupations 0-20 that way
    return [{"value": v, "label": names.get(v, v)} for v in sorted(values, key=order_key)]
