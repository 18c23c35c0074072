"""Reading and validating dataset CSVs, the seeded split and the nested, label-spread subsets."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hydralab.data.table import (
    DatasetError,
    ScanRecord,
    assign_splits,
    read_table,
    select_training_subset,
    training_order,
    van_der_corput,
)


def test_reads_paths_relative_to_the_csv(tiny_csv: Path):
    records = read_table(tiny_csv)
    assert len(records) == 16
    assert all(r.image.is_file() for r in records)
    assert {r.split for r in records} == {"train", "val", "test"}
    assert records[0].subject == "s00"


def _csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "table.csv"
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("label\n1\n", r"missing column\(s\) \['image'\]"),
        ("image\na.nii\n", r"missing column\(s\) \['label'\]"),
        ("image,label\na.nii,nan\n", "line 2: label is nan"),
        ("image,label\na.nii,1\nb.nii,inf\n", "line 3: label is inf"),
        ("image,label\na.nii,three\n", "line 2: label 'three' is not a number"),
        ("image,label\n,1\n", "line 2: empty 'image'"),
        ("image,label,split\na.nii,1,training\n", "line 2: split 'training'"),
        ("image,label,subject\na.nii,1,x\nb.nii,2,x\n", "subject 'x' appears more than once"),
        ("image,label\n", "no rows"),
    ],
)
def test_bad_tables_name_the_culprit(tmp_path: Path, text: str, message: str):
    with pytest.raises(DatasetError, match=message):
        read_table(_csv(tmp_path, text))


@pytest.mark.parametrize("second", ["./scans/a.nii", "scans/../scans/a.nii", "ABSOLUTE"])
def test_the_same_image_under_two_subjects_is_refused(tmp_path: Path, second: str):
    """One scan under two names could land in train and test; spelled differently, it is one."""
    image = tmp_path / "scans" / "a.nii"
    second = str(image) if second == "ABSOLUTE" else second
    csv = _csv(
        tmp_path, f"subject,image,label\ns1,scans/a.nii,1\ns2,scans/b.nii,2\ns3,{second},3\n"
    )
    with pytest.raises(DatasetError) as error:
        read_table(csv)
    message = str(error.value)
    assert message.startswith(f"{csv}: line 4 (subject 's3') and line 2 (subject 's1')")
    assert f"the same image {image.resolve()}" in message


def test_missing_csv_is_named(tmp_path: Path):
    with pytest.raises(DatasetError, match="dataset CSV not found: .*nope.csv"):
        read_table(tmp_path / "nope.csv")


def test_byte_order_mark_is_ignored(tmp_path: Path):
    records = read_table(_csv(tmp_path, "image,label\na.nii,1\n", encoding="utf-8-sig"))
    assert records[0].label == 1.0


def test_labels_optional_for_prediction(tmp_path: Path):
    records = read_table(_csv(tmp_path, "image\na.nii\n"), labels_required=False)
    assert np.isnan(records[0].label)


def _records(labels, split=None):
    return [
        ScanRecord(f"s{i:03d}", Path(f"s{i}.nii"), float(y), split) for i, y in enumerate(labels)
    ]


def test_seeded_split_when_the_csv_has_none():
    records = _records(range(50))
    a = assign_splits(records, 0.2, 0.3, seed=1)
    b = assign_splits(records, 0.2, 0.3, seed=1)
    c = assign_splits(records, 0.2, 0.3, seed=2)
    counts = pd.Series([r.split for r in a]).value_counts().to_dict()
    assert counts == {"train": 25, "test": 15, "val": 10}
    assert a == b
    assert a != c


def test_drawn_split_does_not_depend_on_the_csv_row_order():
    records = _records(range(40))
    shuffled = [records[i] for i in np.random.default_rng(5).permutation(40)]
    split_of = {r.subject: r.split for r in assign_splits(records, 0.25, 0.25, seed=3)}
    assert {r.subject: r.split for r in assign_splits(shuffled, 0.25, 0.25, seed=3)} == split_of


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_split_seed_is_named(seed):
    with pytest.raises(DatasetError, match="data.split_seed must be an integer >= 0"):
        assign_splits(_records(range(10)), 0.2, 0.2, seed=seed)


def test_partial_split_column_is_rejected():
    records = _records(range(3))
    records[0] = ScanRecord("s000", Path("a"), 0.0, "train")
    with pytest.raises(DatasetError, match="some rows but not all"):
        assign_splits(records, 0.2, 0.2, seed=0)


def test_van_der_corput_fills_the_unit_interval_evenly():
    assert [van_der_corput(i) for i in range(8)] == [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]


def _quantile_bin_subset(records, n, seed):
    """The rule this replaced: one random scan per label-quantile bin (follows the density)."""
    rng = np.random.default_rng(seed)
    by_label = sorted(records, key=lambda r: (r.label, r.subject))
    return [by_label[int(rng.choice(b))] for b in np.array_split(np.arange(len(by_label)), n)]


def _ks_to_uniform(subset, low, high) -> float:
    values = np.array([r.label for r in subset])
    return float(stats.kstest((values - low) / (high - low), "uniform").statistic)


def test_training_subset_spreads_over_the_label_range():
    rng = np.random.default_rng(0)
    labels = np.concatenate([rng.uniform(0, 10, 40), rng.uniform(90, 100, 10)])  # skewed
    picked = select_training_subset(_records(labels), 10, seed=0)
    values = np.sort([r.label for r in picked])
    assert len({r.subject for r in picked}) == 10
    assert values[0] < 2 and values[-1] > 90
    # Even over the label range, not the density: the rare high cluster (a fifth of the scans)
    # gets about half of the subset, where a scan per label decile would give it 2.
    assert sum(v > 90 for v in values) >= 4


@pytest.mark.parametrize("n", [12, 20, 30])
def test_training_subset_is_closer_to_uniform_than_quantile_bins_or_chance(n):
    """On a skewed label distribution, the KS distance to the uniform on [min, max] is smaller
    for every subset seed than for any seed of the quantile-bin rule or of a random subset."""
    labels = np.random.default_rng(0).exponential(1.0, 60)
    records = _records(labels)
    low, high = labels.min(), labels.max()
    ours = [_ks_to_uniform(select_training_subset(records, n, s), low, high) for s in range(10)]
    bins = [_ks_to_uniform(_quantile_bin_subset(records, n, s), low, high) for s in range(10)]
    chance = [
        _ks_to_uniform(
            [records[i] for i in np.random.default_rng(s).choice(60, n, False)], low, high
        )
        for s in range(10)
    ]
    assert max(ours) < 0.45
    assert max(ours) < min(bins) and max(ours) < min(chance)


def test_training_subsets_are_nested_across_n():
    labels = np.random.default_rng(1).gamma(2.0, 3.0, 45)
    records = _records(labels)
    for seed in (0, 1, 7):
        sizes = [12, 20, 30, 45]
        subsets = [{r.subject for r in select_training_subset(records, n, seed)} for n in sizes]
        assert [len(s) for s in subsets] == sizes
        assert subsets[0] < subsets[1] < subsets[2] < subsets[3]
        order = [r.subject for r in training_order(records, seed)]
        assert subsets[1] == set(order[:20])


def test_training_subset_is_seeded_and_nested_sizes_differ():
    records = _records(range(30))
    assert select_training_subset(records, 12, 3) == select_training_subset(records, 12, 3)
    assert select_training_subset(records, 12, 3) != select_training_subset(records, 12, 4)
    subsets = {tuple(r.subject for r in select_training_subset(records, 12, s)) for s in range(8)}
    assert len(subsets) >= 4
    assert {r.subject for r in select_training_subset(records, 12, 3)} < {
        r.subject for r in select_training_subset(records, 20, 3)
    }
    assert select_training_subset(records, 30, 3) == records


def test_ties_change_with_the_subset_seed():
    """Many scans share a label (counts): the subset seed, not the names, picks among them."""
    records = _records(np.repeat(np.arange(5), 6))
    subsets = {
        frozenset(r.subject for r in select_training_subset(records, 10, s)) for s in range(6)
    }
    assert len(subsets) >= 3


def test_training_subset_does_not_depend_on_the_csv_row_order():
    labels = np.random.default_rng(2).integers(0, 8, 40)  # ties, broken by seed, not by row
    records = _records(labels)
    shuffled = [records[i] for i in np.random.default_rng(9).permutation(40)]
    for seed in (0, 3):
        assert select_training_subset(shuffled, 15, seed) == select_training_subset(
            records, 15, seed
        )


@pytest.mark.parametrize("seed", [-1, 2.0, None])
def test_bad_subset_seed_is_named(seed):
    with pytest.raises(DatasetError, match="data.subset_seed must be an integer >= 0"):
        select_training_subset(_records(range(30)), 10, seed)


@pytest.mark.parametrize(("n", "message"), [(31, "larger than the train split"), (0, ">= 1")])
def test_bad_n_train(n, message):
    with pytest.raises(DatasetError, match=message):
        select_training_subset(_records(range(30)), n, 0)
