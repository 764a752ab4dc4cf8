"""The Gradio page, one module per part:

    build        `build_demo(backend, store, config) -> gr.Blocks`: the tabs, sign-in on load
    session      sign-in, the browser's user token, `current_user` for every handler
    chat         the Chat tab: answers, thumbs, reports, retries, corrections
    arena        the Arena tab: blind battles and the vote
    leaderboard  the Leaderboard tab: ratings, win rates, chart
    dashboard    the Dashboard tab: versions, training curves; admin actions for admins

Handlers turn Gradio events into calls on the services (`app.chat`, `app.arena`,
`app.admin`, ...). This room never imports the HTTP layer (`app.http`), and the HTTP layer
never imports it.
"""
