"""What a "b-bit network" means in this project.

* :mod:`.primitives`: the quantizer, defined once: :func:`quantize_codes`
  (integer codes ``clip(round(w / step), -K, K)``, K = 2**(b-1) - 1, M = 2**b - 1
  symmetric levels; ``sign(w)`` for b = 1) and :func:`dequantize`
  (``step * codes``); :func:`quantize` is the two composed.
* :mod:`.step_search`: :func:`l2_optimal_step`, the step that minimises the
  squared quantization error of a tensor globally (branch and bound).
* :mod:`.ste`: straight-through estimators for retraining.
* :mod:`.lsq`: learned step size (LSQ): :func:`to_learned` turns the steps of a
  quantized model into trained parameters.
* :mod:`.layers`: :func:`to_quantized` (float model -> model with quantized
  weights in the forward pass and float shadow weights), :func:`update_steps`,
  :func:`bake` and :func:`integer_codes` (the way back out, for evaluation and
  export).

Nothing here knows about data, training loops or Snakemake.
"""

from .layers import (
    QuantConv2d,
    QuantizedTensor,
    QuantLinear,
    bake,
    integer_codes,
    layer_bits_for,
    quantized_layers,
    to_quantized,
    update_steps,
)
from .lsq import (
    LearnedQuantConv2d,
    LearnedQuantLinear,
    learned_step_parameters,
    lsq_grad_scale,
    quantize_lsq,
    to_learned,
)
from .primitives import check_bits, dequantize, max_level, quantization_error, quantize, quantize_codes
from .ste import quantize_ste
from .step_search import l2_optimal_step

__all__ = [
    "LearnedQuantConv2d",
    "LearnedQuantLinear",
    "QuantConv2d",
    "QuantLinear",
    "QuantizedTensor",
    "bake",
    "check_bits",
    "dequantize",
    "integer_codes",
    "l2_optimal_step",
    "learned_step_parameters",
    "lsq_grad_scale",
    "layer_bits_for",
    "max_level",
    "quantization_error",
    "quantize",
    "quantize_codes",
    "quantize_lsq",
    "quantize_ste",
    "quantized_layers",
    "to_learned",
    "to_quantized",
    "update_steps",
]
