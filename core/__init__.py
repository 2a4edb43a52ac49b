"""Code shared by the server and the edge: scoring tables, top-k, fold-in, file formats.

Depends on numpy only. This ``__init__`` deliberately imports nothing so that
``shelfrank.core.errors`` can be used by the client without pulling in numpy.
"""
