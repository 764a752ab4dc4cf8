"""Scripted users: they chat, thumb and vote through the HTTP API, judging with an oracle.

    simulate(url, oracle, prompts, config) -> SimulationSummary

Each simulated user is one anonymous session (`POST /api/session`), so every row its
votes and thumbs leave carries its own user id. The work is `config.votes` blind
battles (`POST /api/battles`, then `POST /api/battles/{id}/vote`) and `config.chats`
chats (`POST /api/chat`, then a thumb with `POST /api/feedback`), spread over the
users and run `config.concurrency` at a time. Nothing else is touched: the server
cannot tell these users from people, and this module cannot see inside the server.

An oracle is any `FUNC(prompt: str, answer: str) -> float`, higher is better. Its
scores become noisy Bradley–Terry choices (Bradley & Terry 1952):

    P(vote A) = sigmoid((s_A - s_B) / noise)

with a tie when |s_A - s_B| <= tie_margin and "both are bad" when both scores are
below `both_bad_below` (off by default). A thumb is up with probability
sigmoid((s - m) / noise), m the running median of the chat answers' scores so far,
so thumbs need no threshold on the oracle's scale. `noise` is in the oracle's units.

Rate limits (429) and unavailable answers (503) are retried after a back-off (the
server's `Retry-After` when it sends one); other errors are counted as failures.

    voters  the choice model (pure), the oracle and the prompts
    run     `simulate` and the `Simulator` behind it
"""

from app.simulate.run import (
    RequestFailed,
    SimulatedUser,
    SimulationConfig,
    SimulationSummary,
    Simulator,
    Task,
    simulate,
)
from app.simulate.voters import (
    OUTCOMES,
    Oracle,
    RunningMedian,
    SimulationError,
    choose_outcome,
    choose_thumb,
    load_oracle,
    load_prompts,
    sigmoid,
)

__all__ = [
    "OUTCOMES",
    "Oracle",
    "RequestFailed",
    "RunningMedian",
    "SimulatedUser",
    "SimulationConfig",
    "SimulationError",
    "SimulationSummary",
    "Simulator",
    "Task",
    "choose_outcome",
    "choose_thumb",
    "load_oracle",
    "load_prompts",
    "sigmoid",
    "simulate",
]
