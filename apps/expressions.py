"""CEL expressions, the one expression language of a definition (an alert
trigger's ``match``): compiling text into a program and evaluating it.

A thin wrapper over cel-python (``celpy``). Definitions are written by
operators but evaluated against data from outside (alert bodies), so the
text is bounded in length and in nesting before anything runs it, and an
evaluation never raises: whatever goes wrong counts as "no match" and is
reported for the caller to log.
"""
from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass

import celpy
import lark
from celpy import celtypes

from apps.text import printable

# Longest expression text compiled: hostile or careless definitions cannot make the parser work for long.
EXPRESSION_MAX = 4096
# Deepest syntax tree accepted. The evaluator recurses along the tree; this keeps it well inside
# Python's recursion limit (one level of parentheses takes about 8 levels of the tree).
TREE_DEPTH_MAX = 300
# Macros that bind a variable of their own (their first argument) and evaluate their body per element.
_COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# Longest reason an evaluation failure is reported with.
_REASON_MAX = 200


@functools.cache
def _environment() -> celpy.Environment:
    """The one CEL environment, made on first use: building its parser takes 0.3-0.6 s of CPU,
    which every process (each CLI command, worker and web server) paid at import, though
    most never compile an expression."""
    return celpy.Environment()


class ExpressionError(ValueError):
    """An expression that cannot be compiled; the message is one printable
    line, starting with the position when there is one ("line 1, column 19: ...")."""


@dataclass(frozen=True)
class Expression:
    """A compiled expression: its text, the top-level variables it names,
    and the program that evaluates it."""

    text: str
    variables: frozenset[str]
    program: celpy.Runner


@dataclass(frozen=True)
class Outcome:
    """What an evaluation gave: ``matched`` only for a result of true;
    ``error`` says why a failed evaluation counts as no match (None when
    the expression evaluated to a bool)."""

    matched: bool
    error: str | None = None


def expression_compile(text: str, *, variables: Collection[str] | None = None) -> Expression:
    """Compile ``text`` into an Expression (compiled programs are cached by
    text). With ``variables``, a top-level name outside them is refused.

    Raises ExpressionError for text that is not a string, too long, not CEL,
    nested too deeply, or naming an undeclared variable."""
    if not isinstance(text, str):
        raise ExpressionError(f"must be a CEL expression (text), not {type(text).__name__}")
    if not text.strip():
        raise ExpressionError("must be a CEL expression, not empty text")
    if len(text) > EXPRESSION_MAX:
        raise ExpressionError(f"is {len(text)} characters long; an expression holds at most {EXPRESSION_MAX}")
    expression, names = _compiled(text)
    if variables is not None:
        for name, line, column in names:
            if name not in variables:
                known = ", ".join(sorted(variables)) or "none"
                raise ExpressionError(
                    f"line {line}, column {column}: undeclared variable '{printable(name)}' (known: {known})"
                )
    return expression


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> tuple[Expression, tuple[tuple[str, int, int], ...]]:
    """The compiled expression of ``text`` and its free names with their positions. Raises ExpressionError."""
    try:
        tree = _environment().compile(text)
    except celpy.CELParseError as exc:
        raise ExpressionError(_parse_error(exc)) from None
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None
    if _depth(tree) > TREE_DEPTH_MAX:
        raise ExpressionError("the expression is nested too deeply")
    _check_comprehensions(tree)
    names = _free_names(tree)
    try:
        program = _environment().program(tree)
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None
    expression = Expression(text=text, variables=frozenset(name for name, _, _ in names), program=program)
    return expression, names


def expression_evaluate(expression: Expression, variables: dict) -> Outcome:
    """Evaluate ``expression`` with ``variables`` (JSON-like values, converted
    with celpy.json_to_cel). Never raises: a result that is not a bool, or an
    error (a missing map key, a type mismatch, an undeclared variable), gives
    ``Outcome(False, reason)``."""
    try:
        activation = {name: celpy.json_to_cel(value) for name, value in variables.items()}
        result = expression.program.evaluate(activation)
    except celpy.CELEvalError as exc:
        return Outcome(False, _reason(exc))
    except RecursionError:
        return Outcome(False, "the expression is nested too deeply to evaluate")
    except Exception as exc:  # noqa: BLE001 - celpy lets Python's own errors through for some bad operands
        return Outcome(False, _shorten(f"{type(exc).__name__}: {exc}"))
    if isinstance(result, celpy.CELEvalError):  # CEL's errors are values: `a || b` may yield one
        return Outcome(False, _reason(result))
    if not isinstance(result, celtypes.BoolType):
        return Outcome(False, f"the result is not a bool but {_type_name(result)}")
    return Outcome(bool(result))


def _parse_error(exc: celpy.CELParseError) -> str:
    """One line for a syntax error: its position, and what was found there."""
    cause = exc.__context__
    position = f"line {exc.line}, column {exc.column}: " if exc.line else ""
    if isinstance(cause, lark.exceptions.UnexpectedToken):
        if cause.token.type == "$END":
            return f"{position}the expression ends too early"
        return f"{position}unexpected {_shorten(repr(str(cause.token)), 40)}"
    if isinstance(cause, lark.exceptions.UnexpectedCharacters):
        return f"{position}unexpected character {_shorten(repr(cause.char), 20)}"
    return f"{position}syntax error"


def _depth(tree: lark.Tree) -> int:
    """The depth of ``tree``, measured without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, lark.Tree))
    return deepest


def _method(node: lark.Tree) -> str | None:
    """The name of the method a ``member_dot_arg`` node calls (``x.exists(...)``)."""
    token = next((child for child in node.children if isinstance(child, lark.Token)), None)
    return str(token) if token is not None else None


def _bound_names(tree: lark.Tree) -> set[str]:
    """Names that comprehension macros bind (``k`` in ``m.exists(k, k == "a")``)."""
    bound = set()
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg" and _method(node) in _COMPREHENSIONS:
            exprlist = next((c for c in node.children if isinstance(c, lark.Tree) and c.data == "exprlist"), None)
            if exprlist is not None and exprlist.children:
                first = exprlist.children[0]
                idents = [leaf for leaf in first.iter_subtrees() if leaf.data == "ident"]
                if len(idents) == 1:
                    bound.add(str(idents[0].children[0]))
    return bound


def _free_names(tree: lark.Tree) -> tuple[tuple[str, int, int], ...]:
    """The top-level names the expression reads (not those its macros bind), each with the
    line and column where it first appears, in order of appearance."""
    bound = _bound_names(tree)
    found: dict[str, tuple[int, int]] = {}
    for node in tree.iter_subtrees_topdown():
        if node.data == "ident" and node.children:
            token = node.children[0]
            name = str(token)
            if name not in bound and name not in found:
                found[name] = (getattr(token, "line", 1) or 1, getattr(token, "column", 1) or 1)
    return tuple((name, line, column) for name, (line, column) in found.items())


def _check_comprehensions(tree: lark.Tree) -> None:
    """Refuse a comprehension inside another's body: each level multiplies the work by a
    list's length, which the data decides. Raises ExpressionError."""
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg" and _method(node) in _COMPREHENSIONS:
            inner = [
                sub for child in node.children if isinstance(child, lark.Tree) and child.data == "exprlist"
                for sub in child.iter_subtrees()
                if sub.data == "member_dot_arg" and _method(sub) in _COMPREHENSIONS
            ]
            if inner:
                meta = inner[0].meta
                position = f"line {meta.line}, column {meta.column}: " if not meta.empty else ""
                raise ExpressionError(f"{position}a comprehension ({_method(inner[0])}) inside another is not allowed")


def _reason(error: BaseException) -> str:
    """A short printable reason from a CEL evaluation error (without celpy's dump of the variables)."""
    message = str(error.args[0]) if error.args else type(error).__name__
    return _shorten(message.split(" (in activation", 1)[0])


def _type_name(value: object) -> str:
    name = type(value).__name__
    return {"StringType": "a string", "IntType": "an int", "UintType": "a uint", "DoubleType": "a double",
            "MapType": "a map", "ListType": "a list", "NoneType": "null"}.get(name, name)


def _shorten(text: str, limit: int = _REASON_MAX) -> str:
    shown = printable(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
