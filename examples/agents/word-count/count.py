"""Reads $SWARM_INPUTS, writes counts to $SWARM_OUTPUTS."""

import json
import os

with open(os.environ["SWARM_INPUTS"]) as fh:
    text = json.load(fh)["text"]
counts = {"lines": len(text.splitlines()), "words": len(text.split()), "chars": len(text)}
with open(os.environ["SWARM_OUTPUTS"], "w") as fh:
    json.dump(counts, fh)
print(f"{counts['words']} words")
