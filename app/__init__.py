"""The web process, in rooms:

    serving/   the `ChatBackend` seam and its backends (local, remote, scripted), hot swap
    http/      the JSON API, one module per route group
    page/      the Gradio page, one module per tab
    cli/       the command line, one module per command group
    config/    one dataclass per component, loaded once at the entry point
    simulate/  scripted voters that use the JSON API like people do

and flat modules for the services both the page and the HTTP layer call (`chat`,
`arena`, `leaderboard`, `auth`, `identity`, `limits`, `admin`, `errors`, `backup`);
`server` assembles them. The page and the HTTP layer never import each other, and no
service imports either. Reaches training only through `trainer.cycle`,
`trainer.schedule` and (the command line) `trainer.jobs`, and the database only through
`storage`. `tests/test_boundaries.py` checks these rules.
"""
