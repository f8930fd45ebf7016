"""IMDB reviews: from the Hub, from a local folder, or the small set that ships for `smoke`.

Every loader returns a `DatasetDict` with `train` and `test` splits of two columns:
`text` (cleaned of `<br />` tags) and `label` (0 = NEGATIVE, 1 = POSITIVE); `load_imdb` also
carves a `validation` split out of `train`.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict
from sklearn.model_selection import train_test_split

from .config import HUB_DATASET, SMOKE_DATA, RunConfig, SetupError, check_hub, hub_error

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
SMOKE_CSV = Path(__file__).parent / "assets" / "smoke_reviews.csv"
SMOKE_PARQUET = SMOKE_CSV.parent / "smoke"  # the same reviews as train.parquet and test.parquet (lesson 01 reads them)
_BR = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_INVISIBLE = {"Cc", "Cf", "Zs", "Zl", "Zp"}  # control, format (zero-width, BOM), separator characters


def clean_text(text: str) -> str:
    """Replace IMDB's `<br />` tags with spaces and collapse runs of whitespace."""
    return _SPACES.sub(" ", _BR.sub(" ", text)).strip()


def is_blank(text: str) -> bool:
    """True when `text` has nothing to read: empty, or only spaces, control and zero-width characters."""
    return all(unicodedata.category(c) in _INVISIBLE for c in text)


def _frame_to_dataset(df: pd.DataFrame, where: str) -> Dataset:
    """Check a `text`,`label` frame, clean the text, and turn it into a Dataset.

    Rows whose text is missing or empty once cleaned are dropped, and the count is printed.
    """
    missing = {"text", "label"} - set(df.columns)
    if missing:
        raise SetupError(f"{where} has no column {sorted(missing)}: IMDB files need `text` and `label` columns.")
    texts = df["text"].fillna("").astype(str).map(clean_text)
    keep = ~texts.map(is_blank).astype(bool)
    if not keep.any():
        raise SetupError(f"{where} has no review with text ({len(df):,} rows): check the file's `text` column.")
    if not keep.all():
        print(f"{where}: dropped {int((~keep).sum()):,} of {len(df):,} reviews with missing or empty text.")
    df = df[keep]
    bad = sorted({v.item() if hasattr(v, "item") else v for v in df["label"].unique()} - {0, 1}, key=str)
    if bad:
        raise SetupError(f"{where} has labels {bad[:5]}: labels must be 0 (negative) or 1 (positive).")
    df = pd.DataFrame({"text": texts[keep], "label": df["label"].astype("int64")})
    return Dataset.from_pandas(df, preserve_index=False)


def _read_aclimdb(split_dir: Path) -> pd.DataFrame:
    """Read the raw aclImdb layout: `split/pos/*.txt` and `split/neg/*.txt`."""
    rows = [(p.read_text(encoding="utf-8"), label)
            for label, sub in ((0, "neg"), (1, "pos"))
            for p in sorted((split_dir / sub).glob("*.txt"))]
    return pd.DataFrame(rows, columns=["text", "label"])


def _find_split(data_dir: Path, split: str) -> pd.DataFrame:
    """Find one split in `data_dir`: `split.parquet`, `split.csv`, or the folder `split/pos|neg`."""
    for path in (data_dir / f"{split}.parquet", data_dir / f"{split}.csv"):
        if path.is_file():
            try:
                return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            except Exception as exc:  # noqa: BLE001 - truncated, damaged or not that format: say which file
                raise SetupError(f"Cannot read {path} ({type(exc).__name__}): the file is damaged or not "
                                 f"{path.suffix[1:]}; copy it again or convert it.") from exc
    if (data_dir / split / "pos").is_dir() and (data_dir / split / "neg").is_dir():
        return _read_aclimdb(data_dir / split)
    raise SetupError(
        f"No {split} split in {data_dir}: expected {split}.parquet, {split}.csv (columns text,label) "
        f"or the aclImdb folders {split}/pos and {split}/neg."
    )


def load_local_imdb(data_dir: str | Path) -> DatasetDict:
    """Load IMDB from a local folder (parquet, csv, or the raw aclImdb layout)."""
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise SetupError(f"Data directory {path} does not exist: pass --data-dir with IMDB's train/test files.")
    return DatasetDict({s: _frame_to_dataset(_find_split(path, s), str(path / s)) for s in ("train", "test")})


def load_smoke_reviews() -> DatasetDict:
    """The small review set that ships with the project (160 train, 80 test), for offline runs."""
    df = pd.read_csv(SMOKE_CSV)
    return DatasetDict({s: _frame_to_dataset(df[df["split"] == s], f"{SMOKE_CSV}:{s}") for s in ("train", "test")})


def write_smoke_parquet(folder: Path = SMOKE_PARQUET) -> None:
    """Write the shipped smoke reviews as `folder/train.parquet` and `test.parquet`: raw `text` and `label`, csv order.

    Lesson 01 reads them with `load_dataset("parquet", ...)`, the call a learner uses on a local IMDB copy.
    Run it again whenever smoke_reviews.csv changes (tests/test_lesson01.py checks that the two agree).
    """
    df = pd.read_csv(SMOKE_CSV)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        df.loc[df["split"] == split, ["text", "label"]].to_parquet(folder / f"{split}.parquet", index=False)


def load_hub_imdb() -> DatasetDict:
    """Download IMDB from the Hugging Face Hub (`stanfordnlp/imdb`); fails fast when it is unreachable."""
    from datasets import load_dataset

    check_hub(f"the dataset {HUB_DATASET}", HUB_DATASET, "dataset")
    try:
        raw = load_dataset(HUB_DATASET)
    except Exception as exc:  # noqa: BLE001 - any failure here means "no data": say what to do
        raise hub_error(f"the dataset {HUB_DATASET}") from exc
    return DatasetDict({s: _frame_to_dataset(raw[s].to_pandas(), f"{HUB_DATASET}:{s}") for s in ("train", "test")})


def stratified_subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """A seeded sample of `n` rows with both labels in equal share (the whole split, shuffled, if n is None)."""
    if n is None or n >= len(ds):
        return ds.shuffle(seed=seed)
    keep, _ = train_test_split(np.arange(len(ds)), train_size=n, stratify=ds["label"], random_state=seed)
    return ds.select(keep)


def split_validation(train: Dataset, n: int, seed: int) -> tuple[Dataset, Dataset]:
    """Carve a seeded, stratified validation set of `n` reviews out of `train`: (rest of train, validation)."""
    if not 2 <= n <= len(train) - 2:
        raise SetupError(f"val_size={n} does not fit {len(train):,} training reviews: "
                         f"choose --val-size between 2 and {len(train) - 2:,}.")
    rest, val = train_test_split(np.arange(len(train)), test_size=n, stratify=train["label"], random_state=seed)
    return train.select(np.sort(rest)), train.select(val)


def load_imdb(cfg: RunConfig) -> tuple[DatasetDict, str]:
    """The run's train/validation/test data, cut to the configured sizes; also returns where it came from.

    The validation reviews come out of the training split (they choose the best epoch); the test
    split is only used once, for the final result.
    """
    if cfg.data_dir == SMOKE_DATA:
        data, source = load_smoke_reviews(), f"shipped smoke set ({SMOKE_CSV.name})"
    elif cfg.data_dir:
        data, source = load_local_imdb(cfg.data_dir), f"local: {cfg.data_dir}"
    else:
        data, source = load_hub_imdb(), f"hub: {HUB_DATASET}"
    train, validation = split_validation(data["train"], cfg.val_size, cfg.seed)
    data = DatasetDict({
        "train": stratified_subset(train, cfg.train_size, cfg.seed),
        "validation": validation,
        "test": stratified_subset(data["test"], cfg.eval_size, cfg.seed),
    })
    return data, source
