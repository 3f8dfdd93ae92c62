"""README.md's Python example, run as written against a fresh reeld (with
REEL_ADDR naming it, as the example's reel.connect() reads it)."""
import os
import re
import subprocess

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
    assert r.stdout.splitlines() == ["PUT pipeline.doc1.raw {'text': 'hello'}",
                                     "BOOTSTRAP_DONE pipeline.*.raw None"]
    assert client.kv.get("app", "counter").value == 1
    run = next(client.runs.list("shop"))
    assert run.result == {"charged": {"amount": 42}}
