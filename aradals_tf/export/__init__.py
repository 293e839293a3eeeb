"""Calibrated SavedModel export for TF Serving, and running exported models.

- `layout`: the version layout `base_dir/<name>/<version>/`, the signatures
  and their outputs, the metadata file (no TensorFlow).
- `saved_model`: `export_saved_model`, which writes a classifier with its
  fitted temperature as a SavedModel.
- `inputs` and `client`: reading input files and running a signature as TF
  Serving would, with its REST bodies (the CLI's `predict`).

The public names of each are re-exported here.
"""

from aradals_tf.export.client import dumps
from aradals_tf.export.client import format_predictions
from aradals_tf.export.client import load_saved_model
from aradals_tf.export.client import prepare_inputs
from aradals_tf.export.client import rest_request
from aradals_tf.export.client import rest_response
from aradals_tf.export.client import run_signature
from aradals_tf.export.client import signature_for
from aradals_tf.export.client import signature_input_spec
from aradals_tf.export.inputs import read_inputs
from aradals_tf.export.layout import INPUT_NAME
from aradals_tf.export.layout import METADATA_PATH
from aradals_tf.export.layout import NEVER_FLIPPED_RADIUS
from aradals_tf.export.layout import OUTPUT_DESCRIPTIONS
from aradals_tf.export.layout import ROBUSTNESS_SIGNATURE
from aradals_tf.export.layout import SERVING_SIGNATURE
from aradals_tf.export.layout import SIGNATURE_INPUTS
from aradals_tf.export.layout import SIGNATURE_OUTPUTS
from aradals_tf.export.layout import SIGNATURES
from aradals_tf.export.layout import UINT8_SIGNATURE
from aradals_tf.export.layout import list_versions
from aradals_tf.export.layout import next_version
from aradals_tf.export.layout import read_metadata
from aradals_tf.export.layout import resolve_saved_model
from aradals_tf.export.layout import signatures_markdown
from aradals_tf.export.saved_model import build_export_archive
from aradals_tf.export.saved_model import export_saved_model

__all__ = [
    "build_export_archive",
    "dumps",
    "export_saved_model",
    "format_predictions",
    "INPUT_NAME",
    "list_versions",
    "load_saved_model",
    "METADATA_PATH",
    "NEVER_FLIPPED_RADIUS",
    "next_version",
    "OUTPUT_DESCRIPTIONS",
    "prepare_inputs",
    "read_inputs",
    "read_metadata",
    "resolve_saved_model",
    "rest_request",
    "rest_response",
    "ROBUSTNESS_SIGNATURE",
    "run_signature",
    "SERVING_SIGNATURE",
    "signature_for",
    "signature_input_spec",
    "SIGNATURE_INPUTS",
    "SIGNATURE_OUTPUTS",
    "SIGNATURES",
    "signatures_markdown",
    "UINT8_SIGNATURE",
]
