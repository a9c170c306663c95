"""A worker keeps the user modules a record lists in the versions it lists (see
``pythagoras_p2p.execution.modules``)."""

from __future__ import annotations

import importlib
import sys
import textwrap


def test_module_versions_put_the_version_a_record_lists_in_place(tmp_path, monkeypatch):
    """The worker side alone: evict a module held in another version, reinstall a kept one."""
    from pythagoras_p2p.execution.context import _state
    from pythagoras_p2p.execution.modules import ModuleVersions, source_hash

    monkeypatch.setitem(_state, "in_worker", True)
    folder = tmp_path / "src"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    path = folder / "versions_helper.py"
    path.write_text("VALUE = 1\n")
    importlib.invalidate_caches()
    try:
        import versions_helper

        versions = ModuleVersions()
        versions.observe()
        v1 = source_hash(str(path))
        path.write_text(textwrap.dedent("""\
            VALUE = 2  # another version
        """))
        v2 = source_hash(str(path))
        versions.align({"versions_helper": v2}, check_files=True)
        assert "versions_helper" not in sys.modules  # the next import reads the file
        import versions_helper as again

        assert again.VALUE == 2
        versions.observe()
        versions.align({"versions_helper": v1}, check_files=False)
        assert sys.modules["versions_helper"] is versions_helper  # the one kept of v1
        assert sys.modules["versions_helper"].VALUE == 1
    finally:
        sys.modules.pop("versions_helper", None)


def test_a_caller_never_evicts_its_own_modules(tmp_path, monkeypatch):
    from pythagoras_p2p.execution.modules import ModuleVersions

    folder = tmp_path / "src"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    (folder / "callers_helper.py").write_text("VALUE = 1\n")
    importlib.invalidate_caches()
    try:
        import callers_helper  # noqa: F401

        versions = ModuleVersions()
        versions.caller = True
        versions.align({"callers_helper": b"\0" * 16}, check_files=True)
        assert "callers_helper" in sys.modules
    finally:
        sys.modules.pop("callers_helper", None)
