"""Reads behind the arena and its leaderboard: which versions to pair, what the votes say.

A mixin of `Store` (see store.py for connections; the battle writes themselves,
`create_battle` and `vote_battle`, live there). Kept in its own file because it is
its own concept: the arena's view of model versions and of voted battles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storage.records import ModelVersion, _Row

if TYPE_CHECKING:
    from sqlite_utils import Database


@dataclass(frozen=True)
class BattleResult(_Row):
    """One voted battle reduced to what a rating needs: who met whom, and the outcome."""

    battle_id: int
    version_a: str
    version_b: str
    outcome: str  # a | b | tie | both_bad


class Battles:
    # provided by Store
    _one: Any
    db: Database

    def previous_live_version(self, kind: str = "policy") -> ModelVersion | None:
        """The retired version that was live most recently before the current live one.

        None when the live version is the first one ever promoted (or there is no live
        version). A rolled-back or rejected version is never "previous": only `retired`.
        """
        row = self._one(
            "SELECT p.* FROM model_versions p"
            " JOIN model_versions live ON live.kind = p.kind AND live.status = 'live'"
            " WHERE p.kind = ? AND p.status = 'retired' AND p.promoted_at IS NOT NULL"
            " AND p.promoted_at <= live.promoted_at AND p.id != live.id"
            " ORDER BY p.promoted_at DESC, p.id DESC LIMIT 1",
            (kind,),
        )
        return ModelVersion.from_row(row) if row else None

    def candidate_versions(self, kind: str = "policy") -> list[ModelVersion]:
        """Versions waiting for promotion, newest first."""
        rows = self.db.query(
            "SELECT * FROM model_versions WHERE kind = ? AND status = 'candidate' ORDER BY id DESC",
            (kind,),
        )
        return [ModelVersion.from_row(r) for r in rows]

    def battle_results(self, *, include_flagged: bool = False) -> list[BattleResult]:
        """Every voted battle, oldest first, with the names of both sides' versions. Votes
        of users flagged as abusive are left out unless `include_flagged`."""
        rows = self.db.query(
            "SELECT b.id AS battle_id, va.name AS version_a, vb.name AS version_b, b.outcome"
            " FROM battles b"
            " JOIN users u ON u.id = b.user_id"
            " JOIN model_versions va ON va.id = b.version_a_id"
            " JOIN model_versions vb ON vb.id = b.version_b_id"
            " WHERE b.outcome IS NOT NULL AND (? OR u.is_flagged = 0) ORDER BY b.id",
            (int(include_flagged),),
        )
        return [BattleResult.from_row(r) for r in rows]
