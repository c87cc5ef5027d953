"""Smoke test against the real Anthropic API; runs only when ANTHROPIC_API_KEY is set.

    ANTHROPIC_API_KEY=... python -m pytest -m live tests/integration/test_claude_live.py

The model defaults to claude-haiku-4-5 (override with SWARM_CLAUDE_LIVE_MODEL); the step is
capped at 8 turns and $0.10.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from swarm_engine.agents.base import StepContext
from swarm_engine.agents.claude.agent import ClaudeAgent
from swarm_engine.models import AgentSpec
from swarm_engine.vm.base import VM

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.environ.get("ANTHROPIC_API_KEY"),
        reason="ANTHROPIC_API_KEY is not set; this test talks to the real Anthropic API",
    ),
]


@pytest.mark.timeout(300)
async def test_live_claude_writes_a_file_and_answers(vm: VM, tmp_path: Path) -> None:
    model = os.environ.get("SWARM_CLAUDE_LIVE_MODEL", "claude-haiku-4-5")
    agent = AgentSpec(
        name="claude-live",
        kind="claude",
        config={
            "model": model,
            "max_tokens": 1024,
            "max_turns": 8,
            "budget": {"max_usd": 0.10},
            "retry": {"max_retries": 3, "backoff_seconds": 2.0},
        },
        output_files=["answer.txt"],
    )
    claude = ClaudeAgent(host_config={})
    claude.preflight(agent)
    ctx = StepContext(
        vm=vm,
        agent=agent,
        inputs={"a": 19, "b": 23},
        ticket={
            "title": "Add two numbers",
            "description": "Use the bash tool to compute a + b with the shell, write only "
            "the result to answer.txt, then reply with the number.",
        },
        step_id="live",
        run_id=0,
        artifacts_dir=tmp_path / "artifacts",
        timeout_seconds=240,
    )
    outcome = await claude.run(ctx)
    assert outcome.ok, outcome.error
    assert outcome.outputs["files"]["answer.txt"].strip() == "42"
    assert "42" in outcome.outputs["answer"]
    used = outcome.usage
    assert used.turns >= 2 and used.input_tokens > 0 and used.output_tokens > 0
    assert used.cost_usd > 0 and used.stop_reason == "end_turn"
    transcript = (tmp_path / "artifacts" / "transcript.json").read_text()
    assert os.environ["ANTHROPIC_API_KEY"] not in transcript
    assert json.loads(transcript)["usage"]["turns"] == used.turns
