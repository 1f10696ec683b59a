"""The README's "Your own data" commands run exactly as written (in a fresh folder, with bash)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def own_data_commands() -> str:
    """The first fenced ``sh`` block of the README section "## Your own data"."""
    text = README.read_text()
    section = text.split("\n## Your own data\n", 1)
    if len(section) != 2:
        pytest.fail("README.md has no '## Your own data' section")
    body = section[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", body, re.S)
    if match is None:
        pytest.fail("the 'Your own data' section has no ```sh block")
    return match.group(1)


def test_readme_own_data_commands_run_as_written(tmp_path):
    script = own_data_commands()
    assert "deepcodes build" in script and "deepcodes bench" in script
    env = dict(os.environ)
    # the deepcodes of this interpreter's environment, with the same sources (PYTHONPATH kept)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "sift10k.hdf5").is_file()
    assert "R@10" in done.stdout
