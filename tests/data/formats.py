"""Small hand-written data sets in each real file format, for the data tests."""

from __future__ import annotations

from pathlib import Path

ML1M = {
    # user 1: items 10 and 30 share a timestamp; file order (10 first) must decide
    "ratings.dat": (
        "1::10::5::978300760\n"
        "1::20::3::978300761\n"
        "1::30::4::978300760\n"
        "2::20::4::978300800\n"
        "2::10::2::978300700\n"
    ),
    "movies.dat": (
        "10::Toy Story (1995)::Animation|Children's|Comedy\n"
        "20::Misérables, Les (1995)::Drama|Musical\n"
        "30::Heat (1995)::Action|Crime|Thriller\n"
        "40::Never Rated (1990)::Drama\n"
    ),
    "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n",
}

_FLAGS = {  # ML-100K genre flags: unknown, Action, ..., Western (19)
    "toy": "0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "goldeneye": "0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
    "unknown": "1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0",
}
ML100K = {
    "u.data": "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n2\t267\t1\t888550872\n",
    "u.item": (
        f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
        f"{_FLAGS['toy']}\n"
        f"2|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?GoldenEye%20(1995)|"
        f"{_FLAGS['goldeneye']}\n"
        f"267|unknown||||{_FLAGS['unknown']}\n"
        f"1300|'Til Théré Was You (1997)|30-May-1997||http://x|{_FLAGS['toy']}\n"
    ),
    "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
}

ML_CSV = {
    "ratings.csv": (
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n"
    ),
    "movies.csv": (
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy|IMAX\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "5,Some Film,(no genres listed)\n"
    ),
}


def write(folder: Path, files: dict[str, str], encoding: str = "latin-1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        enc = "utf-8" if name.endswith(".csv") else encoding
        (folder / name).write_bytes(text.encode(enc))
    return folder
