"""StoreSpec, ThreatModel and eps parsing."""

from fractions import Fraction

import numpy as np
import pytest

from memloss.errors import MemlossError
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel, labels_sha256, parse_eps


def test_eps_is_kept_as_exact_fraction() -> None:
    t = ThreatModel("Linf", "8/255")
    assert t.eps == "8/255" and t.eps_fraction == Fraction(8, 255) and t.eps_float == 8 / 255
    assert ThreatModel("L2", "0.5").eps == "1/2"
    assert ThreatModel("Linf", "16/510").eps == "8/255"


@pytest.mark.parametrize("bad", ["abc", "0", "-1/255", "1/0"])
def test_bad_eps_is_one_line_error(bad: str) -> None:
    with pytest.raises(MemlossError) as info:
        parse_eps(bad)
    assert "\n" not in str(info.value)


def test_bad_norm_and_k_rejected() -> None:
    with pytest.raises(MemlossError, match="norm"):
        ThreatModel("L1", "1/2")
    fp = DatasetFingerprint("d", 10, (3, 4, 4), "x")
    with pytest.raises(MemlossError, match="k=0"):
        StoreSpec(fp, ThreatModel("Linf", "8/255"), 0)
    with pytest.raises(MemlossError, match="shape"):
        DatasetFingerprint("d", 10, (3, 4), "x")


def test_mismatch_names_first_differing_field() -> None:
    fp = DatasetFingerprint("d", 10, (3, 4, 4), "x")
    a = StoreSpec(fp, ThreatModel("Linf", "8/255"), 2)
    assert a.mismatch(StoreSpec(fp, ThreatModel("Linf", "8/255"), 2)) is None
    assert a.mismatch(StoreSpec(fp, ThreatModel("Linf", "4/255"), 2)) == ("eps", "8/255", "4/255")
    assert a.mismatch(StoreSpec(fp, ThreatModel("Linf", "8/255"), 3)) == ("k", 2, 3)


def test_labels_hash_is_dtype_independent() -> None:
    y = np.array([3, 1, 4, 1, 5])
    assert labels_sha256(y.astype(np.int32)) == labels_sha256(y.astype(np.int64))
    assert labels_sha256(y) != labels_sha256(y[::-1])
