"""Offline sync as a state machine (issue 6): devices track offline, sync, crash, lose the
network in the middle of a sync, users are erased on the server and come back (through
their device or another service), in any order.

Invariants after every step, per user: every event the server acknowledged is stored; the
server holds nothing a device or service did not record; nothing recorded before an
erasure ever comes back; a device purges exactly once per erasure, so what it records
after purging is kept and brings the user back.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shelfrank.client import Client, Event
from shelfrank.edge import EdgeRecommender
from shelfrank.edge.outbox import Outbox
from shelfrank.server.app import RunningServer, ServerOptions, start
from tests.conftest import SERVER_CONFIG

USERS = ("u0", "u1")
ITEMS = ("shoe1", "shoe2", "book3", "book4")
KINDS = ("view", "add_to_cart", "purchase", "dismiss")
MODEL_DIR: Path | None = None  # set by the test from the session's toy model


class ConnectionCutError(Exception):
    """The network went away after the server acknowledged a batch."""


class OfflineSync(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        if MODEL_DIR is None:
            raise RuntimeError("MODEL_DIR is not set")
        root = Path(tempfile.mkdtemp(prefix="sync-machine-"))
        self.root = root  # removed in teardown: hypothesis runs many machines
        self.server: RunningServer = start(
            ServerOptions(
                state_dir=root / "server",
                port=0,
                model_dir=MODEL_DIR,
                train_config=SERVER_CONFIG,
                grace_seconds=0.5,
            )
        )
        self.target = f"127.0.0.1:{self.server.port}"
        self.paths = {user: root / user for user in USERS}
        self.devices = {user: self.open(user) for user in USERS}
        self.acknowledged: dict[str, set[str]] = {user: set() for user in USERS}
        self.pending: dict[str, set[str]] = {user: set() for user in USERS}
        self.forbidden: dict[str, set[str]] = {user: set() for user in USERS}
        self.erasures: dict[str, int] = dict.fromkeys(USERS, 0)  # on the server
        self.purged_for: dict[str, int] = dict.fromkeys(USERS, 0)  # on the device

    def open(self, user: str) -> EdgeRecommender:
        return EdgeRecommender(self.paths[user], user, self.target, timeout=5.0, max_attempts=2)

    def stored(self, user: str) -> set[str]:
        return {e.event_id for _, e in self.server.service.store.events_for_user(user)}

    @rule(user=st.sampled_from(USERS), kind=st.sampled_from(KINDS), item=st.sampled_from(ITEMS))
    def track_offline(self, user: str, kind: str, item: str) -> None:
        self.pending[user].add(self.devices[user].track(kind, item))

    def _purges(self, user: str) -> bool:
        """Whether the device's next pull purges: an erasure it has not purged for yet."""
        if self.erasures[user] == self.purged_for[user]:
            return False
        self.pending[user].clear()  # everything recorded before it learned of the erasure
        self.purged_for[user] = self.erasures[user]
        return True

    @rule(user=st.sampled_from(USERS))
    def sync(self, user: str) -> None:
        result = self.devices[user].sync()
        assert not result.offline, result.error
        assert result.purged == self._purges(user)
        self.acknowledged[user] |= self.pending[user]
        self.pending[user].clear()
        if self.stored(user) or self.erasures[user] == 0:
            assert result.snapshot_version, "a user the server holds has a snapshot"

    @precondition(lambda self: any(self.pending.values()))
    @rule(user=st.sampled_from(USERS))
    def cut_network_mid_sync(self, user: str) -> None:
        def cut(outbox: Outbox, event_ids: list[str], state: str, note: str = "") -> None:
            raise ConnectionCutError  # acknowledged by the server, never recorded on the device

        self._purges(user)  # the pull comes first, the cut hits the push
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Outbox, "mark", cut)
            with contextlib.suppress(ConnectionCutError):
                self.devices[user].sync()
        # What was pushed is stored but the device does not know: it stays pending here.

    @rule(user=st.sampled_from(USERS))
    def crash_app(self, user: str) -> None:
        self.devices[user].close()
        self.devices[user] = self.open(user)

    @rule(user=st.sampled_from(USERS))
    def erase_on_server(self, user: str) -> None:
        with Client(self.target) as admin:
            admin.delete_user(user)
        self.forbidden[user] |= self.acknowledged[user] | self.pending[user]
        self.acknowledged[user].clear()
        self.erasures[user] += 1

    @rule(user=st.sampled_from(USERS))
    def erase_between_pull_and_push(self, user: str) -> None:
        push, target, erased = EdgeRecommender._push, self.target, []

        def erase_first(device: EdgeRecommender, client: Client) -> tuple[int, int]:
            with Client(target) as admin:
                admin.delete_user(device.user_id)
            erased.append(device.user_id)
            return push(device, client)

        purges = self._purges(user)  # the pull comes first; a purge ends the sync
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(EdgeRecommender, "_push", erase_first)
            result = self.devices[user].sync()
        assert result.purged == purges
        assert bool(erased) != purges
        if erased:  # what the device pushes now was recorded before: the server refuses it
            self.forbidden[user] |= self.acknowledged[user] | self.pending[user]
            self.acknowledged[user].clear()
            self.erasures[user] += 1
            assert result.pushed == 0
            assert result.rejected == len(self.pending[user])
            self.pending[user].clear()  # rejected on the device; the next pull purges it

    @rule(user=st.sampled_from(USERS), item=st.sampled_from(ITEMS))
    def track_from_a_service(self, user: str, item: str) -> None:
        # A microservice tracks for the user directly: after an erasure the user is back,
        # and the device must still purge what it recorded before it learned of it.
        event = Event(user, item, "view")
        with Client(self.target) as service:
            assert service.track([event]).accepted == 1
        self.acknowledged[user].add(event.event_id)

    @invariant()
    def the_server_holds_exactly_what_it_should(self) -> None:
        for user in USERS:
            stored = self.stored(user)
            assert self.acknowledged[user] <= stored, "an acknowledged event was lost"
            assert stored <= self.acknowledged[user] | self.pending[user], "an invented event"
            assert not stored & self.forbidden[user], "erased data came back"

    def teardown(self) -> None:
        for device in self.devices.values():
            device.close()
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def test_offline_sync_state_machine(toy_model_dir: Path) -> None:
    global MODEL_DIR
    MODEL_DIR = toy_model_dir
    machine = OfflineSync.TestCase
    machine.settings = settings(
        max_examples=30,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    machine().runTest()
