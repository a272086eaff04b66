"""``module:name`` references a user passes on the command line (a dataset source, a model factory)."""

from __future__ import annotations

import importlib
import traceback


def import_reference(spec: str, what: str, error: type[Exception]):
    """The object ``module:name`` names; ``error`` (e.g. DatasetError) with one line saying what is
    missing, prefixed by ``what`` (``"dataset mymod:load"``). Anything importing the module raises (a
    syntax error, an exception at its top level) is that one line too: the module, the exception's type
    and message, and where in the user's code it happened (no traceback: the project has no debug mode
    that would show one)."""
    module, _, name = spec.strip().partition(":")
    try:
        loaded = importlib.import_module(module)
    except SyntaxError as err:  # also IndentationError, TabError
        where = f" in {err.filename} line {err.lineno}" if err.filename else ""
        raise error(f"{what}: cannot import module {module!r}: {type(err).__name__}{where}: {err.msg}") from None
    except ImportError as err:
        hint = ""
        if module.endswith(".py") and getattr(err, "name", None) in (module, module[:-3]):
            hint = (f"; give the module's name, not its file: {module[:-3]}:{name or 'FACTORY'}, with its folder "
                    "on PYTHONPATH or as the working directory")
        raise error(f"{what}: cannot import module {module!r} ({err}){hint}") from None
    except Exception as err:  # raised by the module's own code while it was imported
        raise error(f"{what}: importing module {module!r} raised {type(err).__name__}: {err}"
                    f"{_user_frame(err)}") from None
    try:
        return getattr(loaded, name)
    except AttributeError:
        raise error(f"{what}: module {module!r} has no {name!r}") from None


def _user_frame(err: BaseException) -> str:
    """`` (FILE line N)``: where ``err`` was raised in the user's own code (the innermost frame of its
    traceback outside the import machinery and installed libraries), or nothing."""
    import sysconfig

    libraries = tuple({sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")} - {None})
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if f.filename != __file__ and not f.filename.startswith(("<", *libraries))]
    return f" ({frames[-1].filename} line {frames[-1].lineno})" if frames else ""
