"""The web process: Gradio page, HTTP API, serving backends and the command line.

Reaches training only through `trainer.cycle` / `trainer.schedule` (the command line
may call a trainer entry point directly), and the database only through `storage`.
"""
