"""On-device recommendation that works offline and syncs deltas.

    from shelfrank.edge import EdgeRecommender

    device = EdgeRecommender("app-data/shelfrank", user_id="u42", target="api.shop:50051")
    device.sync()                                # pull the snapshot, push what is queued
    device.track("view", "sku-123")              # durable at once, reranks at once
    recs = device.recommend(k=10)                # no network needed; queued as shown
    device.track("purchase", recs.item_ids[0],   # feedback on that list
                 recommendation_id=recs.recommendation_id, position=1)

Importing this package never imports lightfm, scipy or the server.
"""

from shelfrank.core.session import SessionConfig
from shelfrank.edge.recommender import EdgeRecommender, NoSnapshotError, SyncResult

__all__ = ["EdgeRecommender", "NoSnapshotError", "SessionConfig", "SyncResult"]
