"""The HTTP JSON API beside the page, for scripts, the simulator and tests: one module per
route group, registered on the FastAPI app before Gradio is mounted on it.

    common    the JSON error, the body parser, the bearer token, error handlers, the 404
    sessions  POST /api/session, POST /api/login, the page sign-in form's address limit
    chat      /healthz, /api/version, /api/chat, /api/feedback
    arena     /api/battles, /api/battles/{id}/vote, /api/leaderboard
    admin     /api/admin/...

Routes turn requests into calls on the services (`app.chat`, `app.arena`, `app.admin`,
...) and their answers into JSON. This room never imports the page (`app.page`), and the
page never imports it.
"""
