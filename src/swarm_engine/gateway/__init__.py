"""The model API gateway: lets code in a VM call the Messages API without the key.

A step that may call the model API (an agent of kind `claude-code`, or a `shell` agent that
declares `model_api: true`) gets its own listener on the host's 127.0.0.1, on a port of the
reserved range `[gateway] ports`, forwarded into its VM only; and a random token valid on
that listener only, for as long as the step runs. Inside, `ANTHROPIC_BASE_URL` points at
the listener and `ANTHROPIC_API_KEY` holds the token, so any Anthropic client works as it
is. The gateway swaps the token for the host's key, forwards to the host's endpoint,
streams the answer back unchanged, and counts every response's usage into the step's
record, stopping the step once its budget is used up (docs/agents.md, docs/security.md).

Modules: `settings` (`[gateway]`, light: loaded with every command's settings), `proxy` (the
listener of one step), `meter` (usage, cost, budget), `http11` (the HTTP/1.1 server side),
`step` (opening one for a step attempt). Import them directly; this package imports nothing.
"""
