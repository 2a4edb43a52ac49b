"""The public gRPC contract of shelfrank: the ``.proto`` files beside this module
(``shelfrank/v1/*.proto``, shipped with the package).

``shelfrank.proto._generated`` holds the Python code generated from them by
``scripts/gen_proto.py``. It is private: the client and the server both import it, by
design (one wire format, one generated copy), and neither exposes its types; the public
API speaks the dataclasses of ``shelfrank.client.types``.
"""
