"""Passes: the registry, pipelines, the pattern-rewrite driver and the pass manager."""
from .context import MissingPassData, PassContext, Remark
from .manager import History, PassError, PassRecord, run_pipeline
from .pipeline import Step, format_pipeline, parse_pipeline
from .registry import PASSES, PIPELINES, Option, PassInfo, PassOptionError, get_pass, register_pass, register_pipeline
from .rewrite import Pattern, Rewriter, apply_patterns, pattern, remove_dead

from . import cleanup as _cleanup  # noqa: F401,E402  (registers the clean-up passes)
from . import canonicalize as _canonicalize, cse as _cse, fold_constants as _fold_constants  # noqa: F401,E402
from . import fuse as _fuse  # noqa: F401,E402  (registers fuse)
from . import fold_batchnorm as _fold_batchnorm  # noqa: F401,E402  (registers fold-batchnorm)
from . import quantize as _quantize  # noqa: F401,E402  (registers quantize)
from . import layout as _layout  # noqa: F401,E402  (registers layout)
from . import grouped_conv as _grouped_conv  # noqa: F401,E402  (registers rewrite-grouped-conv)
from . import pool_forms as _pool_forms  # noqa: F401,E402  (registers rewrite-pool)
from . import xla_options as _xla_options  # noqa: F401,E402  (registers xla-options)
from . import equalize as _equalize  # noqa: F401,E402  (registers equalize, smooth-quant)
from . import gptq as _gptq  # noqa: F401,E402  (registers gptq)
from . import lower_quant as _lower_quant  # noqa: F401,E402  (registers lower-quant)
from . import bias_correction as _bias_correction  # noqa: F401,E402  (registers bias-correction)
from . import prune as _prune, prune_sensitivity as _prune_sensitivity  # noqa: F401,E402

__all__ = ["History", "MissingPassData", "Option", "PASSES", "PIPELINES", "PassContext", "PassError",
           "PassInfo", "PassOptionError", "PassRecord", "Pattern", "Remark", "Rewriter", "Step",
           "apply_patterns", "format_pipeline", "get_pass", "parse_pipeline", "pattern",
           "register_pass", "register_pipeline", "remove_dead", "run_pipeline"]
