"""Serving: whatever writes the answers, behind one seam.

    backend     the `ChatBackend` seam, `Reply`, `SamplingParams`, the backend errors
    local       transformers + peft in this process (batched, one adapter per version)
    generation  per-row sampling, stopping and streaming hooks for one batched `generate`
    remote      an OpenAI-compatible model server (TGI or vLLM)
    scripted    answers from a function, for tests
    swap        `VersionSync`: keeps the loaded versions in step with the store (hot swap)

This room knows nothing of chats, votes, users, HTTP or the page: it imports only
`app.config` and, for model loading, `trainer.models`.
"""
