"""Jinja for pipeline.yaml, sandboxed: a template cannot run code, read files
outside its folder, or stall lint.

``--var`` values are data: they are inserted once and never rendered again
(codegen also keeps the compiled file free of Jinja delimiters, so Beam YAML's
own Jinja pass over it cannot run them either).

The sandbox is Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`
(no private attributes, no mutating built-in containers) with limits:

* at most :data:`MAX_STEPS` loop iterations and calls (every ``for`` runs
  through a counter), and :data:`MAX_SECONDS` of wall time;
* no value and no output longer than :data:`MAX_OUTPUT` characters, checked
  before ``*`` / ``**`` / ``%`` / padding widths build one, and after every
  call, filter, concatenation and printed value;
* ``{% include %}``, ``{% import %}`` and ``{% extends %}`` read only files
  under the pipeline's folder (symbolic links resolved), UTF-8, of at most
  MAX_FILE_BYTES.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from beam_dsl.diagnostics import MAX_FILE_BYTES, Diagnostic, Source, Span, read_source

MAX_STEPS = 100_000
MAX_SECONDS = 5.0
MAX_OUTPUT = MAX_FILE_BYTES
_MAX_BITS = 100_000  # integers built by * and **

# Widths in printf (%-10s, %*d) and str.format ({:>10}) specs.
_WIDTHS = re.compile(r"%[-+ #0]*(\d+|\*)|\{[^{}]*:[^{}\d]*(\d+)")
# Filters and str methods whose int arguments are output widths.
_PADDING = {"center", "indent", "wordwrap", "truncate", "ljust", "rjust", "zfill", "expandtabs"}


class TemplateLimit(SecurityError):
    """A template went past one of the sandbox's limits."""


def _refuse_widths(fmt: str, args: Iterable[Any]) -> None:
    for match in _WIDTHS.finditer(fmt):
        width = match.group(1) or match.group(2)
        if width == "*":
            _refuse_ints("a * width", args)
        elif len(width) > 7 or int(width) > MAX_OUTPUT:
            raise TemplateLimit(f"a format width of {width} is over the limit of {MAX_OUTPUT:,}")


def _refuse_ints(what: str, args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and abs(arg) > MAX_OUTPUT:
            raise TemplateLimit(f"{what} of {arg} is over the limit of {MAX_OUTPUT:,}")


_CONTAINERS = (list, tuple, set, frozenset, dict)


def _weight(value: Any, limit: int = MAX_OUTPUT) -> int:
    """About how many characters ``value`` prints as: string lengths plus one per
    item, nested containers counted each time they appear. Stops past ``limit``."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, _CONTAINERS):
            total += len(item)
            items = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend(i for i in items if isinstance(i, (str, bytes, *_CONTAINERS)))
    return total


def _sized(value: Any) -> Any:
    if isinstance(value, (str, bytes, *_CONTAINERS)) and _weight(value) > MAX_OUTPUT:
        raise TemplateLimit(f"a value longer than {MAX_OUTPUT:,} characters or items")
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise TemplateLimit(f"an integer of more than {_MAX_BITS:,} bits")
    return value


def _sized_args(args: Iterable[Any]) -> list[Any]:
    """``args`` as a list, each checked: a call must not get to build something huge."""
    args = list(args)
    for arg in args:
        _sized(arg)
    return args


class _FolderLoader(jinja2.BaseLoader):
    """Templates from one folder and below it; nothing that resolves outside it."""

    def __init__(self, folder: str):
        self.root = os.path.realpath(folder)

    def get_source(self, environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        try:  # refuses '..' segments
            path = os.path.realpath(os.path.join(self.root, *split_template_path(template)))
        except jinja2.TemplateNotFound:
            path = ""
        if (
            not path
            or os.path.commonpath([self.root, path]) != self.root
            or not os.path.isfile(path)
        ):
            raise jinja2.TemplateNotFound(
                template, f"no template '{template}' in the pipeline's folder"
            )
        source, problem = read_source(path)
        if problem is not None:
            raise jinja2.TemplateError(f"template '{template}': {problem.message}")
        mtime = os.path.getmtime(path)
        return source.text, path, lambda: os.path.getmtime(path) == mtime


class _Sandbox(ImmutableSandboxedEnvironment):
    """One render's environment: the sandbox plus a step budget and size checks."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, folder: str):
        super().__init__(
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            loader=_FolderLoader(folder),
            cache_size=0,
        )
        del self.globals["lipsum"]  # lipsum(n) writes n paragraphs: nothing a pipeline needs
        self.filters = {name: self._checked(name, f) for name, f in self.filters.items()}
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    # -- the budget
    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateLimit(f"more than {MAX_STEPS:,} loop iterations and calls")
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering took longer than {MAX_SECONDS:g} s")

    def loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Every ``for`` loop iterates through this (see :meth:`compile`)."""
        for item in iterable:
            self.step()
            yield item

    def sized(self, value: Any) -> Any:
        return _sized(value)

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        """Compiles ``source`` with every loop counted and every concatenation and
        printed value size-checked (included templates come through here too)."""
        if isinstance(source, str):
            source = self.parse(source, name, filename)
        for loop in source.find_all(nodes.For):
            loop.iter = self._wrap("loop", loop.iter)
        for output in source.find_all(nodes.Output):
            output.nodes = [
                n if isinstance(n, nodes.TemplateData) else self._wrap("sized", n)
                for n in output.nodes
            ]
        for concat in list(source.find_all(nodes.Concat)):
            concat.nodes = [self._wrap("sized", n) for n in concat.nodes]
        return super().compile(source, name, filename, raw, defer_init)

    @staticmethod
    def _wrap(method: str, node: nodes.Expr) -> nodes.Call:
        call = nodes.Call(nodes.EnvironmentAttribute(method), [node], [], None, None)
        return call.set_lineno(node.lineno)

    # -- calls, filters, operators
    def call(__self, __context, __obj, *args, **kwargs):  # Jinja's own signature
        __self.step()
        values = _sized_args([*args, *kwargs.values()])
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)) and getattr(__obj, "__name__", "") in _PADDING:
            _refuse_ints("a width", values)
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def _checked(self, name: str, func: Callable) -> Callable:
        @functools.wraps(func)  # keeps Jinja's pass_context / pass_environment marks
        def checked(*args, **kwargs):
            self.step()
            values = _sized_args([*args, *kwargs.values()])
            if name in _PADDING:
                _refuse_ints("a width", values)
            if name == "format" and args and isinstance(args[0], str):
                _refuse_widths(args[0], values[1:])
            return _sized(func(*args, **kwargs))

        return checked

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None

        def checked(*args, **kwargs):
            _refuse_widths(value.__self__, [*args, *kwargs.values()])
            return _sized(wrapper(*args, **kwargs))

        return checked

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        self.step()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                    if _weight(seq) * n > MAX_OUTPUT:
                        raise TemplateLimit(f"a value longer than {MAX_OUTPUT:,} characters")
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > _MAX_BITS:
                    raise TemplateLimit(f"an integer of more than {_MAX_BITS:,} bits")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * left.bit_length() > _MAX_BITS:
                raise TemplateLimit(f"an integer of more than {_MAX_BITS:,} bits")
        elif operator == "%" and isinstance(left, str):
            values = right.values() if isinstance(right, dict) else right
            _refuse_widths(left, values if isinstance(values, (tuple, list)) else [values])
        return _sized(super().call_binop(context, operator, left, right))


def _template_line(exc: BaseException) -> int | None:
    """The line of the pipeline's own template where ``exc`` was raised (Jinja
    rewrites tracebacks so that template frames carry template lines)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _diagnostic(source: Source, exc: Exception) -> Diagnostic:
    what = "template variable" if isinstance(exc, jinja2.UndefinedError) else "template error"
    detail = getattr(exc, "message", None) or str(exc)
    if len(detail) > 200:  # a message may quote a huge value
        detail = detail[:197] + "..."
    if isinstance(exc, jinja2.TemplateSyntaxError):
        if exc.filename and exc.filename != "<template>":
            where = f"{exc.name or exc.filename}, line {exc.lineno}"
            return source.diagnostic("E102", f"{what} in {where}: {detail}", None)
        line = exc.lineno
    else:
        line = _template_line(exc)
    span = Span.point(line, 1, len(source.line(line) or " ")) if line else None
    hint = "pass it with --var NAME=VALUE" if isinstance(exc, jinja2.UndefinedError) else None
    return source.diagnostic("E102", f"{what}: {detail}", span, hint)


def render(source: Source, variables: dict[str, Any], folder: str) -> tuple[str, list[Diagnostic]]:
    """Applies Jinja variables (``--var k=v``) in the sandbox; the text, or the
    source unchanged and an E102 diagnostic."""
    env = _Sandbox(folder)
    try:
        template = env.from_string(source.text)
        pieces, size = [], 0
        for piece in template.generate(**variables):
            size += len(piece)
            if size > MAX_OUTPUT:
                raise TemplateLimit(f"the output is longer than {MAX_OUTPUT:,} characters")
            pieces.append(piece)
        return "".join(pieces), []
    except Exception as exc:  # any error in a user's template is theirs
        return source.text, [_diagnostic(source, exc)]
