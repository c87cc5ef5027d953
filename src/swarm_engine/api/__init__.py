"""The HTTP API (`swarm-engine serve`): FastAPI over the service layer (docs/api.md).

Modules: `app` (the application), `auth` (bearer token), `errors` (JSON error bodies),
`models` (request and response bodies), `deps` and `pools` (a store per request thread),
one router per resource (`tickets`, `logs`, `runs`, `fleet`, `registry`, `metrics`), and
`server` (uvicorn on a socket bound before it starts).
"""
