"""Feature-token embeddings: how a user or item vector is composed from its tokens.

LightFM represents an entity as the weighted sum of the embeddings of its features
(identity and metadata tokens such as ``category=shoes``). Keeping per-token rows lets the
server and the edge build vectors for entities the model has never seen (cold start) from
their tokens alone. Two weightings exist:

- ``training``: the rows are LightFM's token embeddings and each token keeps the weight it
  has in a trained entity's row, ``1 / (identity_weight + n_tokens)`` (used for users);
- ``unit``: the rows are a ridge map fitted from 0/1 token rows to learned vectors, and
  every token counts once (used for items; see ``shelfrank.server.cold_start``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from shelfrank.core.errors import InvalidInputError
from shelfrank.core.ids import IdMap

FloatArray = npt.NDArray[np.float32]
TokenWeighting = Literal["training", "unit"]
TOKEN_WEIGHTINGS: tuple[TokenWeighting, ...] = ("training", "unit")


class TokenEmbeddings:
    """Per-token vector and bias rows, plus how a token set is weighted when composed."""

    def __init__(
        self,
        vocabulary: IdMap,
        embeddings: FloatArray,
        biases: FloatArray,
        *,
        identity_weight: float,
        weighting: TokenWeighting = "training",
    ) -> None:
        if embeddings.shape[0] != len(vocabulary) or biases.shape[0] != len(vocabulary):
            raise InvalidInputError(
                f"token table rows disagree: {len(vocabulary)} tokens, "
                f"{embeddings.shape[0]} embeddings, {biases.shape[0]} biases"
            )
        if identity_weight < 0:
            raise InvalidInputError(f"identity_weight: must be >= 0, got {identity_weight}")
        if weighting not in TOKEN_WEIGHTINGS:
            raise InvalidInputError(
                f"weighting: must be one of {TOKEN_WEIGHTINGS}, got {weighting!r}"
            )
        self.weighting: TokenWeighting = weighting
        self.vocabulary = vocabulary
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.biases = np.ascontiguousarray(biases, dtype=np.float32)
        self.identity_weight = identity_weight

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def known_tokens(self, tokens: Sequence[str]) -> list[int]:
        return sorted(set(self.vocabulary.indices(tokens)))

    def compose(self, tokens: Sequence[str]) -> tuple[FloatArray, float]:
        """Vector and bias of an entity without a trained identity, from its tokens.

        Unknown tokens are ignored; with none known the result is the zero vector.
        """
        rows = self.known_tokens(tokens)
        if not rows:
            return np.zeros(self.dim, np.float32), 0.0
        if self.weighting == "unit":
            weight = np.float32(1.0)
        else:
            weight = np.float32(1.0 / (self.identity_weight + len(rows)))
        vector = self.embeddings[rows].sum(axis=0) * weight
        bias = float(self.biases[rows].sum() * weight)
        return vector.astype(np.float32), bias
