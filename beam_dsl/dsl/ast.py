"""The spec AST: frozen dataclasses, one per grammar construct, each with a span.

Statements hold their clauses as a tuple in source order; checks.py decides
which clauses a statement needs and allows, and the accessors below read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from beam_dsl.diagnostics import Span


@dataclass(frozen=True)
class Node:
    span: Span


# ---------------------------------------------------------------- names and values


@dataclass(frozen=True)
class Ident(Node):
    """A name: a column, a statement, a model, a step, an argument."""

    name: str


@dataclass(frozen=True)
class Literal(Node):
    """A constant. ``kind`` is int, float, string, bool, null or quantity.

    Quantities keep their number and unit (``20%``, ``5m``, ``512MB``); the
    checks convert them by context (see :mod:`beam_dsl.dsl.units`).
    """

    kind: str
    value: Any
    unit: str | None = None
    text: str = ""


@dataclass(frozen=True)
class ColumnRef(Node):
    """``col`` or ``qualifier.col`` (``churn_lr.confidence``)."""

    name: str
    qualifier: str | None = None

    @property
    def dotted(self) -> str:
        return f"{self.qualifier}.{self.name}" if self.qualifier else self.name


@dataclass(frozen=True)
class TupleValue(Node):
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Kwarg(Node):
    name: str
    value: Any


@dataclass(frozen=True)
class Call(Node):
    """``dotted.name(arg, k = v)``: estimators, classes, combiners, CALL methods."""

    func: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[Kwarg, ...] = ()
    func_span: Span | None = None


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class FuncCall(Node):
    func: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "not" | "neg"
    operand: Any


@dataclass(frozen=True)
class Binary(Node):
    op: str  # and or = != < <= > >= + - * / %
    left: Any
    right: Any


@dataclass(frozen=True)
class InList(Node):
    operand: Any
    items: tuple[Any, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between(Node):
    operand: Any
    low: Any
    high: Any
    negated: bool = False


@dataclass(frozen=True)
class Like(Node):
    operand: Any
    pattern: Any
    negated: bool = False


@dataclass(frozen=True)
class IsNull(Node):
    operand: Any
    negated: bool = False


# ---------------------------------------------------------------- clauses


@dataclass(frozen=True)
class Clause(Node):
    keyword: str  # the clause's keyword as a user writes it, for messages


@dataclass(frozen=True)
class PerClause(Clause):
    columns: tuple[Ident, ...]


@dataclass(frozen=True)
class WhereClause(Clause):
    expr: Any


@dataclass(frozen=True)
class FeaturesClause(Clause):
    columns: tuple[Ident, ...]
    star: bool = False
    except_: tuple[Ident, ...] = ()


@dataclass(frozen=True)
class LabelClause(Clause):
    column: Ident


@dataclass(frozen=True)
class UsingClause(Clause):
    call: Call


@dataclass(frozen=True)
class Encoder(Node):
    name: Ident
    columns: tuple[Ident, ...]


@dataclass(frozen=True)
class EncodeClause(Clause):
    encoders: tuple[Encoder, ...]


@dataclass(frozen=True)
class HoldoutClause(Clause):
    fraction: Literal
    seed: int | None = None


@dataclass(frozen=True)
class MetricsClause(Clause):
    metrics: tuple[Ident, ...]


@dataclass(frozen=True)
class MinRowsClause(Clause):
    count: int


@dataclass(frozen=True)
class GateClause(Clause):
    expr: Any


@dataclass(frozen=True)
class SaveClause(Clause):
    path: Literal


@dataclass(frozen=True)
class HintsClause(Clause):
    hints: tuple[Kwarg, ...]


@dataclass(frozen=True)
class FrameworkClause(Clause):
    framework: str  # sklearn | pytorch | huggingface | onnx
    path: Literal


@dataclass(frozen=True)
class CustomClause(Clause):
    call: Call


@dataclass(frozen=True)
class ClassClause(Clause):
    call: Call


@dataclass(frozen=True)
class CallClause(Clause):
    call: Call


@dataclass(frozen=True)
class FallbackClause(Clause):
    model: Ident


@dataclass(frozen=True)
class InputClause(Clause):
    columns: tuple[Ident, ...]


@dataclass(frozen=True)
class OutputClause(Clause):
    columns: tuple[Ident, ...]


@dataclass(frozen=True)
class BatchClause(Clause):
    min_size: int
    max_size: int | None = None
    wait: Literal | None = None


@dataclass(frozen=True)
class DeviceClause(Clause):
    device: Ident


@dataclass(frozen=True)
class SharedClause(Clause):
    pass


@dataclass(frozen=True)
class RefreshClause(Clause):
    every: Literal


@dataclass(frozen=True)
class TrustClause(Clause):
    types: tuple[Literal, ...]  # dotted type names, as strings


@dataclass(frozen=True)
class ClassesClause(Clause):
    labels: tuple[Literal, ...]  # in class-index order


@dataclass(frozen=True)
class StepClause(Clause):
    name: Ident
    model: Ident
    args: tuple[ColumnRef, ...] = ()
    star: bool = False


@dataclass(frozen=True)
class CombineClause(Clause):
    value: Any  # Call (a combiner) or ColumnRef (a step name)
    alias: Ident | None = None


@dataclass(frozen=True)
class Arm(Node):
    model: Ident
    share: Literal


@dataclass(frozen=True)
class SplitClause(Clause):
    keys: tuple[Ident, ...]
    arms: tuple[Arm, ...]


@dataclass(frozen=True)
class ShadowClause(Clause):
    models: tuple[Ident, ...]


@dataclass(frozen=True)
class CascadeArm(Node):
    model: Ident
    when: Any = None


@dataclass(frozen=True)
class CascadeClause(Clause):
    arms: tuple[CascadeArm, ...]


@dataclass(frozen=True)
class SwitchCase(Node):
    when: Any
    model: Ident


@dataclass(frozen=True)
class SwitchClause(Clause):
    cases: tuple[SwitchCase, ...]
    default: Ident | None = None


@dataclass(frozen=True)
class EntityClause(Clause):
    columns: tuple[Ident, ...]


@dataclass(frozen=True)
class TimestampClause(Clause):
    column: Ident


@dataclass(frozen=True)
class WindowClause(Clause):
    kind: str  # sliding | tumbling | session
    size: Literal
    every: Literal | None = None


@dataclass(frozen=True)
class WindowsClause(Clause):
    sizes: tuple[Literal, ...]


@dataclass(frozen=True)
class Aggregate(Node):
    func: Ident
    args: tuple[Any, ...] = ()
    star: bool = False


@dataclass(frozen=True)
class SelectItem(Node):
    aggregate: Aggregate
    alias: Ident
    filter: Any = None


@dataclass(frozen=True)
class SelectClause(Clause):
    items: tuple[SelectItem, ...]


@dataclass(frozen=True)
class TtlClause(Clause):
    duration: Literal


@dataclass(frozen=True)
class OnlineClause(Clause):
    uri: Literal


@dataclass(frozen=True)
class OfflineClause(Clause):
    path: Literal


@dataclass(frozen=True)
class LatenessClause(Clause):
    duration: Literal


@dataclass(frozen=True)
class AsOfClause(Clause):
    column: Ident


@dataclass(frozen=True)
class JoinClause(Clause):
    features: tuple[Ident, ...]


# ---------------------------------------------------------------- statements

C = TypeVar("C", bound=Clause)


@dataclass(frozen=True)
class Statement(Node):
    name: Ident
    clauses: tuple[Clause, ...]

    keyword = "STATEMENT"

    def get(self, kind: type[C]) -> C | None:
        """The first clause of this kind, or None."""
        for clause in self.clauses:
            if isinstance(clause, kind):
                return clause
        return None

    def all(self, kind: type[C]) -> list[C]:
        return [c for c in self.clauses if isinstance(c, kind)]


@dataclass(frozen=True)
class Train(Statement):
    keyword = "TRAIN"


@dataclass(frozen=True)
class Model(Statement):
    keyword = "MODEL"


@dataclass(frozen=True)
class Ensemble(Statement):
    keyword = "ENSEMBLE"


@dataclass(frozen=True)
class Features(Statement):
    keyword = "FEATURES"


@dataclass(frozen=True)
class Dataset(Statement):
    keyword = "DATASET"


@dataclass(frozen=True)
class SpecFile:
    """A parsed ``.bdsl`` file."""

    path: str
    statements: tuple[Statement, ...]
