"""The IR: types, values, nodes, graphs, the op registry, text form, verifier, save/load."""
from . import ops as _ops  # noqa: F401  (fills the registry)
from .annotations import Annotation
from .builder import GraphBuilder, make_node
from .graph import Attrs, Graph, Namer, Node, Requirement, Value
from .parser import ParseError, parse
from .registry import OPS, AttrSpec, Cost, OpDef, OpTypeError, define_op, get_op
from .serialize import load, save
from .stats import graph_stats
from .types import DTYPES, Dim, TensorType, dtype_name, numpy_dtype
from .verify import VerificationError, verify

__all__ = ["Annotation", "Attrs", "AttrSpec", "Cost", "DTYPES", "Dim", "Graph", "GraphBuilder", "Namer", "Node",
           "OPS", "OpDef", "OpTypeError", "ParseError", "Requirement", "TensorType", "Value", "VerificationError",
           "define_op", "dtype_name", "get_op", "graph_stats", "load", "make_node", "numpy_dtype",
           "parse", "save", "verify"]
from .infer import InferenceError, infer_types  # noqa: E402  (re-inference after shape changes)

__all__ += ["InferenceError", "infer_types"]
