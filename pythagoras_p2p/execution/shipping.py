"""The pickle of a function record: the function with the caller's user modules, by value.

A worker must run the code the caller has in memory, not what the worker finds on disk: a helper
module edited after the caller imported it (and not reloaded), or patched in the caller
(``helpers.g = ...``), would otherwise give the worker another answer than a plain call, stored
under the same address. So a record pickles, together with the function:

* every user module the function reaches (its defining module, modules and the modules of
  functions and classes among its globals, modules its body imports; and, from those, the same
  again), each **whole**: all its globals, by value. The functions of a shipped module share
  one globals dict that holds the whole module (``globals()``, ``eval`` in a helper work). The
  worker puts the shipped modules in ``sys.modules`` while the record's tasks run
  (:class:`.modules.ModuleVersions` keeps them as versions), so ``import helpers`` in the body
  gets the caller's ``helpers``;
* for a function whose fingerprint walk was *coarse* (it makes dynamic lookups: ``globals()``,
  ``vars()``, ``eval``, ``exec``, a computed ``getattr``), the whole of its own globals too
  (cloudpickle alone sends only the names its code mentions). A value there that cannot be
  pickled is sent as a stand-in (:class:`Unsent`) that raises, naming it, when it is used.

A module whose state cannot be pickled (a lock, an open connection among its globals) is not
shipped: the worker imports it by name, and a record lists it as *unshipped*; the worker then
checks that the file it loads is the one the caller loaded (:mod:`.modules`), and refuses the
call naming the module and the fix when it is not. A patch made in the caller to such a module
is not seen by workers.

Two wrappers of the standard library do not pickle as they are and get a reducer here: a
``functools.singledispatch`` function (its dispatch cache holds weak references) is rebuilt
from its base function and its registry; an ``lru_cache`` of user code (pickled by name, which a
worker's ``__main__`` lacks) is rebuilt as ``lru_cache(maxsize, typed)`` of the function it wraps.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from blake3 import blake3

from ..errors import PythagorasError
from ..identity.code import imports
from ..identity.usercode import is_user_code

__all__ = ["Shipment", "ship", "Unsent"]


class Shipment(NamedTuple):
    """What :func:`ship` made: the pickle of ``(func, {name: module})``, the shipped modules'
    version (name -> digest) and the user modules that could not be shipped."""

    pickled: bytes
    shipped: dict
    unshipped: list


class Unsent:
    """Stands, in a worker, for a global of the caller that could not be pickled: any use of it
    raises, naming it (never a silently missing global)."""

    __slots__ = ("_name", "_kind")

    def __init__(self, name: str, kind: str):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_kind", kind)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        name, kind = object.__getattribute__(self, "_name"), object.__getattribute__(self, "_kind")
        raise PythagorasError(
            f"global {name!r} (a {kind}) of the caller could not be sent to this worker: it "
            f"cannot be pickled, and the function reaches its globals dynamically (globals(), "
            f"vars(), eval, exec). Create it inside the function, or pass it as an argument")

    def __repr__(self) -> str:
        return f"<unsent global {object.__getattribute__(self, '_name')}>"

    def __reduce__(self):
        return Unsent, (object.__getattribute__(self, "_name"),
                        object.__getattribute__(self, "_kind"))

    __getattr__ = __call__ = __bool__ = __len__ = __iter__ = __getitem__ = __setitem__ = _fail
    __contains__ = __eq__ = __lt__ = __gt__ = __add__ = __mul__ = __sub__ = __int__ = _fail
    __float__ = __index__ = __str__ = __format__ = __setattr__ = _fail
    __hash__ = None  # type: ignore[assignment]  # unhashable, as the data model spells it


# --------------------------------------------------------------------------- reducers


def _singledispatch(base: Any, impls: list) -> Any:
    """A ``singledispatch`` function rebuilt from its base function and registrations."""
    made = functools.singledispatch(base)
    for cls, impl in impls:
        made.register(cls, impl)
    return made


def _lru_cache(func: Any, maxsize: Any, typed: bool) -> Any:
    return functools.lru_cache(maxsize=maxsize, typed=typed)(func)


def _is_singledispatch(obj: types.FunctionType) -> bool:
    scope = obj.__dict__
    return (isinstance(scope.get("registry"), types.MappingProxyType) and "dispatch" in scope
            and "__wrapped__" in scope and obj.__code__.co_name == "wrapper"
            and obj.__globals__.get("__name__") == "functools")


def _user_defined(obj: Any) -> bool:
    wrapped = getattr(obj, "__wrapped__", None)
    scope = getattr(wrapped, "__globals__", None)
    return isinstance(scope, dict) and is_user_code(scope.get("__name__"))


def _record_pickler() -> type:
    import cloudpickle
    from cloudpickle.cloudpickle import dynamic_subimport, subimport

    class RecordPickler(cloudpickle.Pickler):
        """cloudpickle with the caller's module states (see the module docstring)."""

        def __init__(self, file: io.BytesIO, states: dict[int, tuple[str, dict]]):
            super().__init__(file, protocol=5)
            self.states = states  # id(module) -> (name, globals to send)
            for module_id, (_name, state) in states.items():
                self.globals_ref[module_id] = state

        def reducer_override(self, obj: Any) -> Any:
            kind = type(obj)
            if kind is types.ModuleType:
                found = self.states.get(id(obj.__dict__))
                if found is not None:
                    return dynamic_subimport, found
                if is_user_code(obj.__name__) and obj.__name__ != "__main__":
                    return subimport, (obj.__name__,)  # not shipped: imported by name
            elif kind is types.FunctionType and _is_singledispatch(obj) and _user_defined(obj):
                registry = obj.__dict__["registry"]
                return _singledispatch, (obj.__dict__["__wrapped__"],
                                         [(c, f) for c, f in registry.items() if c is not object])
            elif isinstance(obj, functools._lru_cache_wrapper) and _user_defined(obj):
                params = obj.cache_parameters()
                return _lru_cache, (obj.__wrapped__, params["maxsize"], params["typed"])
            return super().reducer_override(obj)

    return RecordPickler


# --------------------------------------------------------------------------- what is shipped


def _user_module(name: Any) -> types.ModuleType | None:
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None or name == "__main__" or not getattr(module, "__file__", None):
        return None
    return module if is_user_code(name) else None


def _reached_by(scope: dict, code: types.CodeType | None, found: dict) -> list:
    """User modules that ``scope``'s values (and ``code``'s imports) name, not in ``found``."""
    new = []

    def add(name: Any) -> None:
        module = _user_module(name)
        if module is not None and name not in found:
            found[name] = module
            new.append(module)

    for value in list(scope.values()):
        if isinstance(value, types.ModuleType):
            add(value.__name__)
        else:
            name = getattr(type(value), "__module__", None) if not isinstance(
                value, (type, types.FunctionType)) else getattr(value, "__module__", None)
            add(name)
            if isinstance(value, types.FunctionType) and value.__globals__ is scope:
                _imports_into(value.__code__, scope, add)
    if code is not None:
        _imports_into(code, scope, add)
    return new


def _imports_into(code: types.CodeType, scope: dict, add: Any) -> None:
    package = scope.get("__package__") or scope.get("__name__")
    for name, level, fromlist in imports(code):
        try:
            absolute = importlib.util.resolve_name("." * level + name, package) if level else name
        except (ImportError, ValueError):
            continue
        parts = absolute.split(".")
        for end in range(1, len(parts) + 1):  # `import a.b` binds a, and runs a.b
            add(".".join(parts[:end]))
        for item in fromlist:
            add(f"{absolute}.{item}")


def reached_modules(func: types.FunctionType) -> dict[str, types.ModuleType]:
    """The user modules ``func`` reaches, and those they reach in turn (by name)."""
    found: dict[str, types.ModuleType] = {}
    defining = _user_module(func.__globals__.get("__name__"))
    if defining is not None:
        found[defining.__name__] = defining
    todo = [*found.values(), *_reached_by(func.__globals__, func.__code__, found)]
    while todo:
        module = todo.pop()
        todo.extend(_reached_by(module.__dict__, None, found))
    return dict(sorted(found.items()))


# Not sent: how the caller's process imported a module (its loader may be an import hook's,
# holding that process's state); a worker gets builtins of its own.
_LOCAL = ("__builtins__", "__loader__", "__spec__", "__cached__")


def _state(scope: dict) -> dict:
    state = dict(scope)
    for name in _LOCAL:
        state.pop(name, None)
    return state


def _pickles(pickler: type, obj: Any, states: dict) -> bool:
    try:
        pickler(io.BytesIO(), states).dump(obj)
    except Exception:
        return False
    return True


# cloudpickle's by-value registry is one set of module names for the whole process: a record
# made in one thread (async_parallel's) while another thread makes one reaching the same module
# would otherwise unregister it under the other's feet (its pickle then goes by name, and its
# own unregister fails). Records are made under one lock, and each name is counted: registered
# by the first holder, unregistered by the last, never more often than registered. A module the
# user registered themselves stays registered.
_BY_VALUE_LOCK = threading.RLock()
_BY_VALUE_COUNTS: dict[str, int] = {}


@contextmanager
def _by_value(modules: Any) -> Iterator[None]:
    """``modules`` registered with cloudpickle for pickling by value while the block runs."""
    import cloudpickle

    with _BY_VALUE_LOCK:
        held = []
        try:
            for module in {m.__name__: m for m in modules}.values():  # a name once (aliases)
                name = module.__name__
                if name not in _BY_VALUE_COUNTS:
                    if name in cloudpickle.list_registry_pickle_by_value():
                        continue  # registered by the user: theirs to unregister
                    try:
                        cloudpickle.register_pickle_by_value(module)
                    except ValueError:  # not in sys.modules under its own name
                        continue
                _BY_VALUE_COUNTS[name] = _BY_VALUE_COUNTS.get(name, 0) + 1
                held.append(module)
            yield
        finally:
            for module in held:
                name = module.__name__
                _BY_VALUE_COUNTS[name] -= 1
                if _BY_VALUE_COUNTS[name] == 0:
                    del _BY_VALUE_COUNTS[name]
                    if name in cloudpickle.list_registry_pickle_by_value():
                        cloudpickle.unregister_pickle_by_value(module)


def ship(func: types.FunctionType, coarse: bool) -> Shipment:
    """Pickle ``func`` with the user modules it reaches (and, when ``coarse``, its whole
    globals); raises what pickling the function itself raises."""
    pickler = _record_pickler()
    modules = reached_modules(func)
    states = {id(m.__dict__): (name, _state(m.__dict__)) for name, m in modules.items()}
    scope = func.__globals__
    own = coarse and id(scope) not in states
    if own:
        states[id(scope)] = (scope.get("__name__", "__main__"), _state(scope))
    with _by_value(modules.values()):
        root = (func, {name: m for name, m in modules.items()})
        try:
            return _dump(pickler, root, states, modules, [])
        except Exception:
            pass
        unshipped = []
        for name, module in modules.items():  # the modules that cannot be sent by value
            if not _pickles(pickler, module, {id(module.__dict__): states[id(module.__dict__)]}):
                unshipped.append(name)
                del states[id(module.__dict__)]
        if own:
            _stand_ins(pickler, states[id(scope)][1])
        sent = {name: m for name, m in modules.items() if name not in unshipped}
        return _dump(pickler, (func, sent), states, sent, unshipped)


def _stand_ins(pickler: type, state: dict) -> None:
    """Replace the values of ``state`` that cannot be pickled by :class:`Unsent`."""
    for key, value in list(state.items()):
        if not _pickles(pickler, value, {}):
            state[key] = Unsent(str(key), type(value).__qualname__)


def _dump(pickler: type, root: tuple, states: dict, sent: dict, unshipped: list) -> Shipment:
    out = io.BytesIO()
    pickler(out, states).dump(root)
    pickled = out.getvalue()
    digest = blake3(b"pythagoras-shipped\0" + pickled).digest(16)
    return Shipment(pickled, dict.fromkeys(sent, digest), unshipped)
