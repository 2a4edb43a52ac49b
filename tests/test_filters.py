from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from shelfrank.core.filters import FeatureIndex
from shelfrank.core.ids import IdMap

TOKENS = ["c=a", "c=b", "brand=x", "brand=y", "tag=sale"]


@given(
    st.lists(st.sets(st.sampled_from(range(len(TOKENS)))), min_size=1, max_size=20),
    st.lists(st.lists(st.sampled_from([*TOKENS, "c=unknown"]), min_size=1, max_size=3), max_size=3),
    st.lists(st.sampled_from([*TOKENS, "nope=1"]), max_size=2),
)
def test_mask_equals_the_definition(
    items: list[set[int]], filters: list[list[str]], excluded: list[str]
) -> None:
    indptr = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in items], out=indptr[1:])
    indices = np.array([t for s in items for t in sorted(s)], dtype=np.int64)
    index = FeatureIndex(IdMap(TOKENS), indptr, indices, len(items))
    mask = index.allowed(filters, excluded)
    expected = [
        all(any(TOKENS.index(t) in s for t in f if t in TOKENS) for f in filters)
        and not any(TOKENS.index(t) in s for t in excluded if t in TOKENS)
        for s in items
    ]
    if not filters and not excluded:
        assert mask is None
    else:
        assert mask is not None
        assert mask.tolist() == expected
