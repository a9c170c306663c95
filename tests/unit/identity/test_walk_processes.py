"""The walk across fresh processes on one home: a user module edited between two runs is seen
wherever the module lives (a namespace package, a project holding its own virtual environment,
a module reached only through a computed lookup), and a global Enum does not hang a worker."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
import venv

from helpers import run_python

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
{imports}
from pythagoras_p2p import LocalCloud
cloud = LocalCloud(workers=1)

@cloud.add_pure_function
def g(*, x):
    return {body}

print(g(x=1))
cloud.close()
"""


def _two_runs(tmp_path, home, files: dict, edit: dict, imports: str, body: str, run=None):
    """Results of the same script before and after ``edit`` of the project's files."""
    root = tmp_path / "project"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    script = SCRIPT.format(root=str(root), imports=imports, body=body)
    run = run or (lambda s: run_python(s, env={"PYTHAGORAS_HOME": str(home),
                                               "PYTHONDONTWRITEBYTECODE": "1"}).stdout.split())
    first = run(script)
    for name, text in edit.items():
        (root / name).write_text(text)
    return first, run(script)


def test_a_namespace_package_of_the_project_is_user_code(tmp_path, home):
    first, second = _two_runs(
        tmp_path, home, {"nspkg/helper.py": "def h(x):\n    return x + 1\n"},
        {"nspkg/helper.py": "def h(x):\n    return x + 100\n"},
        "import nspkg.helper", "nspkg.helper.h(x)")
    assert (first, second) == (["2"], ["101"])


def test_a_module_reached_by_a_computed_getattr_is_covered(tmp_path, home):
    first, second = _two_runs(
        tmp_path, home, {"mylib.py": "A = 1\nB = 10\n"}, {"mylib.py": "A = 1\nB = 20\n"},
        "import mylib", "getattr(mylib, 'AB'[x])")
    assert (first, second) == (["10"], ["20"])


def test_a_project_holding_its_virtual_environment_is_user_code(tmp_path, home):
    env_dir = tmp_path / "project"  # `python -m venv .` in the project's own folder
    venv.EnvBuilder(with_pip=False).create(env_dir)
    purelib = next((env_dir / "lib").glob("python*/site-packages"))
    ours = [p for p in site.getsitepackages() if os.path.isdir(p)]
    (purelib / "outer.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in ours))
    python = env_dir / "bin" / "python"

    def run(script):
        proc = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHAGORAS_HOME": str(home),
                                                "PYTHONDONTWRITEBYTECODE": "1"})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    probe = run("import sys; print(sys.prefix)")
    assert os.path.realpath(probe[0]) == os.path.realpath(env_dir)
    first, second = _two_runs(
        tmp_path, home, {"mylib.py": "def h(x):\n    return x + 1\n"},
        {"mylib.py": "def h(x):\n    return x + 100\n"}, "import mylib", "mylib.h(x)", run=run)
    assert (first, second) == (["2"], ["101"])


def test_a_global_enum_does_not_hang_sync_remote(tmp_path, home):
    script = textwrap.dedent("""
        import enum
        from pythagoras_p2p import PCloud
        cloud = PCloud()

        class Color(enum.Enum):
            RED = 1
            GREEN = 2

        @cloud.add_pure_function
        def shade(*, x):
            return Color.RED.value + x

        print(shade(x=1), shade.sync_remote(x=2), shade.sync_remote(x=2))
        cloud.close()
    """)
    path = tmp_path / "enum_script.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHAGORAS_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "3", "3"]
