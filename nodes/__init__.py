"""ComfyUI node adapters. Thin: they validate inputs, convert IMAGE tensors and call ``models/``."""
from . import hidiff
from . import blur_lab
from . import deblurdiff
from . import fidediff
from . import fidediff_estimate
from . import osdd
from . import weights_help  # noqa: F401  (serves /deblur/weights and /deblur/readme for the frontend)
from . import template_thumbnails  # noqa: F401  (template cards' pictures on hosts that serve only the JSON)

NODE_CLASS_MAPPINGS = {**hidiff.NODE_CLASS_MAPPINGS, **blur_lab.NODE_CLASS_MAPPINGS, **deblurdiff.NODE_CLASS_MAPPINGS,
                       **fidediff_estimate.NODE_CLASS_MAPPINGS, **fidediff.NODE_CLASS_MAPPINGS, **osdd.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**hidiff.NODE_DISPLAY_NAME_MAPPINGS, **blur_lab.NODE_DISPLAY_NAME_MAPPINGS, **deblurdiff.NODE_DISPLAY_NAME_MAPPINGS,
                              **fidediff_estimate.NODE_DISPLAY_NAME_MAPPINGS, **fidediff.NODE_DISPLAY_NAME_MAPPINGS,
                              **osdd.NODE_DISPLAY_NAME_MAPPINGS}

from .number_inputs import guard_number_inputs  # noqa: E402

guard_number_inputs(NODE_CLASS_MAPPINGS)  # last: every node registered above, whoever added it
