"""Named bearer tokens (server/callers.py)."""

from __future__ import annotations

import pytest

from shelfrank.core.errors import InvalidInputError
from shelfrank.server.callers import Callers, parse_caller


def test_each_token_names_its_caller() -> None:
    callers = Callers({"shop-a": "alpha", "shop-b": "beta=="})
    assert callers.required
    assert callers.authenticate("Bearer alpha") == "shop-a"
    assert callers.authenticate("Bearer beta==") == "shop-b"
    for wrong in ("Bearer gamma", "alpha", "", None, b"Bearer alpha", "Bearer alph"):
        assert callers.authenticate(wrong) is None
    assert callers.rate_key({"authorization": "Bearer beta=="}, "ipv4:1.2.3.4:5") == (
        "caller:shop-b"
    )
    assert Callers({}).rate_key({"authorization": "Bearer x"}, "ipv4:1.2.3.4:5") == (
        "peer:ipv4:1.2.3.4:5"
    )


def test_bad_callers_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="same token"):
        Callers({"a": "t", "b": "t"})
    with pytest.raises(InvalidInputError, match="printable ASCII"):
        Callers({"a": "tö"})
    with pytest.raises(InvalidInputError, match="needs a name"):
        Callers({"": "t"})
    assert parse_caller("shop=to=ken") == ("shop", "to=ken")
    with pytest.raises(InvalidInputError, match="NAME=TOKEN"):
        parse_caller("shop")
