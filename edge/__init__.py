"""On-device reranking that works offline and syncs deltas (arrives with issue 4).

Must stay light: importing it never imports lightfm, scipy or the server.
"""
