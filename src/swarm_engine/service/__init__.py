"""The service layer: every operation on tickets, runs, logs, the registry and VMs, with its
rules, in one place. The CLI (`swarm_engine.cli`) and the HTTP API (`swarm_engine.api`)
both call it and check nothing beyond their own syntax, so a rule holds for every client.

One module per resource: `tickets`, `runs`, `logs`, `registry`, `vms`; `values` checks
what clients hand in, `metrics` reads what `/metrics` reports. Functions take the `Store`
(and the `Registry` where definitions matter) to work on; they raise the `SwarmError`
tree, which the CLI turns into an exit code and the API into an HTTP status.
"""
