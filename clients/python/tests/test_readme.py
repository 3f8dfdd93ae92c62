"""README.md's Python example, run as written against a fresh reeld (with
REEL_ADDR naming it, as the example's reel.connect() reads it)."""
import os
import re
import subprocess

import reel

from conftest import ROOT, python


def _python_blocks(path, section):
    with open(path) as f:
        text = f.read()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_the_readme_python_example_runs_as_written(reeld, client):
    blocks = _python_blocks(os.path.join(ROOT, "README.md"), "Python")
    assert len(blocks) == 1
    r = subprocess.run([python(), "-c", blocks[0]], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "REEL_ADDR": reeld.addr})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["PUT counter 1", "BOOTSTRAP_DONE counter None"]
    assert client.kv.get("app", "counter").value == 1
    assert client.workspace.get("app", "docs/notes.txt") == b"large files too"
    run = next(client.runs.list("shop"))
    assert run.status == reel.RunStatus.COMPLETED
    assert run.result == {"charged": {"amount": 42}}
    assert [e.payload["name"] for e in client.journal.read(run.run_id)
            if e.kind == "signal"] == ["reel.sleep.0"]
