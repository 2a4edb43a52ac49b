"""Closing the loop: which served recommendations led to clicks, carts, purchases and
dismissals (:mod:`.attribution`), the statistics to compare variants of an experiment
(:mod:`.stats`) and the report built from both (:mod:`.report`)."""
