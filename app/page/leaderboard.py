"""The Leaderboard tab: Bradley–Terry ratings with 95% intervals, battle counts and win
rates, the win-rate matrix, and a chart, from `app.leaderboard`. The Dashboard shows the
same table with flagged users' votes included.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

from app.leaderboard import Leaderboard, store_leaderboard
from storage import Store

TABLE_HEADERS = ["version", "status", "rating", "95% interval", "battles", "win rate"]


def leaderboard_tab(store: Store, tab: gr.Tab) -> None:
    gr.Markdown(
        "Bradley–Terry ratings from the arena's votes (Elo scale, `base` = 1000; a tie "
        "counts half, *both are bad* counts for neither). Intervals: 95% bootstrap."
    )
    table = gr.Dataframe(
        headers=TABLE_HEADERS, interactive=False, label="Ratings", elem_id="leaderboard-table"
    )
    matrix = gr.Dataframe(
        interactive=False, label="Win rate of the row's version against the column's"
    )
    chart = gr.Plot(label="Ratings with 95% intervals", format="png")
    refresh = gr.Button("Refresh")
    gr.on(
        [tab.select, refresh.click],
        show_leaderboard(store),
        outputs=[table, matrix, chart],
        api_name="leaderboard",
    )


def show_leaderboard(store: Store):
    def show_leaderboard() -> tuple[pd.DataFrame, pd.DataFrame, Figure | None]:
        """The table, the win-rate matrix and the chart, from every vote so far."""
        board = store_leaderboard(store)
        statuses = {v.name: v.status for v in store.versions("policy")}
        return leaderboard_table(board, statuses), win_rate_table(board), rating_chart(board)

    return show_leaderboard


def leaderboard_table(board: Leaderboard, statuses: dict[str, str]) -> pd.DataFrame:
    rows = [
        [
            r.version,
            statuses.get(r.version, ""),
            r.rating,
            f"{r.ci95[0]:.0f} – {r.ci95[1]:.0f}",
            r.battles,
            "—" if r.win_rate is None else f"{r.win_rate:.0%}",
        ]
        for r in board.ratings
    ]
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def win_rate_table(board: Leaderboard) -> pd.DataFrame:
    names = [r.version for r in board.ratings]
    cells = [["—" if w is None else f"{w:.0%}" for w in row] for row in board.win_rates]
    return pd.DataFrame(
        [[n, *row] for n, row in zip(names, cells, strict=True)], columns=["", *names]
    )


def rating_chart(board: Leaderboard) -> Figure | None:
    """Each version's rating as a dot with its 95% interval, best on top."""
    if not board.ratings:
        return None
    ratings = board.ratings[::-1]
    figure = Figure(figsize=(6, 0.5 * len(ratings) + 1.2), layout="tight")
    axes = figure.add_subplot()
    y = range(len(ratings))
    x = [r.rating for r in ratings]
    err = [[r.rating - r.ci95[0] for r in ratings], [r.ci95[1] - r.rating for r in ratings]]
    axes.errorbar(x, y, xerr=err, fmt="o", capsize=4)
    axes.set_yticks(list(y), [r.version for r in ratings])
    axes.axvline(1000, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("rating (base = 1000)")
    return figure
