"""utils.data: cleaning, local folders in three layouts, bad folders, stratified subsets."""

import pandas as pd
import pytest

from utils.config import SetupError, resolve_config
from utils.data import (clean_text, load_imdb, load_local_imdb, load_smoke_reviews, split_validation, stratified_subset,
                        write_smoke_parquet)

ROWS = [("Great film.<br /><br />Loved it", 1), ("Awful   plot.", 0), ("Fine acting<br/>superb", 1), ("Dull.", 0)]


def write_split(folder, name, rows, fmt):
    """Write rows as folder/name.parquet or .csv."""
    df = pd.DataFrame(rows, columns=["text", "label"])
    if fmt == "parquet":
        df.to_parquet(folder / f"{name}.parquet")
    else:
        df.to_csv(folder / f"{name}.csv", index=False)


def test_clean_text_removes_br_tags_and_extra_spaces():
    assert clean_text("Great film.<br /><br />Loved  it ") == "Great film. Loved it"
    assert clean_text("a<BR>b<br/>c") == "a b c"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_local_files_load_cleaned(tmp_path, fmt):
    write_split(tmp_path, "train", ROWS, fmt)
    write_split(tmp_path, "test", ROWS[:2], fmt)
    data = load_local_imdb(tmp_path)
    assert len(data["train"]) == 4 and len(data["test"]) == 2
    assert data["train"][0] == {"text": "Great film. Loved it", "label": 1}


def test_aclimdb_layout_loads(tmp_path):
    for split in ("train", "test"):
        for sub, text in (("pos", "A joy<br />to watch"), ("neg", "A bore")):
            (tmp_path / split / sub).mkdir(parents=True)
            (tmp_path / split / sub / "0_8.txt").write_text(text)
    data = load_local_imdb(tmp_path)
    assert sorted(zip(data["test"]["text"], data["test"]["label"])) == [("A bore", 0), ("A joy to watch", 1)]


def test_missing_folder_and_files_say_what_is_expected(tmp_path):
    with pytest.raises(SetupError, match="does not exist"):
        load_local_imdb(tmp_path / "nope")
    with pytest.raises(SetupError, match=r"train\.parquet, train\.csv"):
        load_local_imdb(tmp_path)


def test_labels_outside_0_1_are_refused(tmp_path):
    write_split(tmp_path, "train", [("ok", 1), ("meh", 3)], "csv")
    write_split(tmp_path, "test", ROWS, "csv")
    with pytest.raises(SetupError, match=r"labels \[3\]"):
        load_local_imdb(tmp_path)


def test_missing_column_is_named(tmp_path):
    pd.DataFrame({"review": ["x"], "label": [1]}).to_csv(tmp_path / "train.csv", index=False)
    write_split(tmp_path, "test", ROWS, "csv")
    with pytest.raises(SetupError, match="text"):
        load_local_imdb(tmp_path)


def test_stratified_subset_is_balanced_and_seeded():
    train = load_smoke_reviews()["train"]
    a, b = stratified_subset(train, 40, seed=1), stratified_subset(train, 40, seed=1)
    assert len(a) == 40 and sum(a["label"]) == 20
    assert a["text"] == b["text"]
    assert a["text"] != stratified_subset(train, 40, seed=2)["text"]
    assert a.features == train.features


def test_load_imdb_smoke_profile_applies_sizes():
    data, source = load_imdb(resolve_config("smoke", train_size=50, eval_size=20, val_size=30))
    assert (len(data["train"]), len(data["validation"]), len(data["test"])) == (50, 30, 20)
    assert "smoke" in source
    assert not any("<br" in t for t in data["train"]["text"])


def test_validation_is_carved_from_train_without_overlap():
    train = load_smoke_reviews()["train"]
    rest, val = split_validation(train, 32, seed=3)
    assert (len(rest), len(val), sum(val["label"])) == (128, 32, 16)  # stratified: half positive
    assert not set(rest["text"]) & set(val["text"])
    assert val["text"] == split_validation(train, 32, seed=3)[1]["text"]
    with pytest.raises(SetupError, match="val-size"):
        split_validation(train, len(train), seed=3)


def test_smoke_parquet_copy_loads_as_the_smoke_set(tmp_path):
    """write_smoke_parquet's train/test files, read as a local folder, are the shipped smoke set."""
    write_smoke_parquet(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.parquet", "train.parquet"]
    local, shipped = load_local_imdb(tmp_path), load_smoke_reviews()
    for split in ("train", "test"):
        assert local[split].to_dict() == shipped[split].to_dict()
