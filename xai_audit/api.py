"""The public plugin API: everything a plugin may import from xai-audit, in one module.

Built-in plugins import from here and nowhere else in the host, exactly as a
third-party plugin must (a test checks it). docs/plugins.md documents every
name, field by field. Anything not listed here is internal and may change.

    from xai_audit.api import hookimpl, ExplainerPlugin, Explanation, Options
"""

from __future__ import annotations

from xai_audit import __version__, hookimpl
from xai_audit.contract.batching import (
    best_batch_size,
    fixed_batch_size,
    forward_in_best_layout,
    in_best_layout,
    prefers_channels_last,
)
from xai_audit.contract.batching import chunks as batch_slices
from xai_audit.contract.discovery import CONFIRMATIONS, CUES, Candidate, DiscovererPlugin, DiscoveryContext
from xai_audit.contract.figures import COMMON_FIELDS, FIGURE_KINDS, array_ref, check_figure
from xai_audit.contract.images import ImageView
from xai_audit.contract.images import chunks as sample_chunks
from xai_audit.contract.images import stack as stack_images
from xai_audit.contract.imports import ImportProblem, import_object, split_spec
from xai_audit.contract.inputs import InputSpec, Preprocess
from xai_audit.contract.interventions import (
    InterventionOptions,
    InterventionRun,
    Transform,
    apply_and_predict,
    compare,
    intervention_result,
    region_masks,
    shrink_for_report,
    subsample,
    to_grayscale,
)
from xai_audit.contract.layers import (
    as_feature_map,
    first_tensor,
    head_layer,
    layer_activations,
    penultimate_activations,
    resolve_layer,
    token_grid,
)
from xai_audit.contract.recommendations import (
    AUGMENT_FRACTION,
    COLUMNS,
    DEFAULT_TARGET_WIDTH,
    augment_row,
    recommendation,
)
from xai_audit.contract.skin import MIN_SKIN_PIXELS, skin_pixels, skin_tone_angle, srgb_to_lab
from xai_audit.contract.stats import (
    ALPHA,
    EQUIVALENCE_METHOD,
    bootstrap_gap_ci,
    bootstrap_paired_diff_ci,
    bootstrap_two_sample_diff_ci,
    chi2_homogeneity,
    chi2_independence,
    class_gain_test,
    equivalence_test,
    group_accuracies,
    holm,
    mcnemar_exact,
    permutation_gap_test,
    prediction_shift_matrix,
    samples_for_ci_width,
    two_proportion_test,
    wilson_ci,
)
from xai_audit.contract.types import (
    FACE_REGIONS,
    HOST_OPTIONS,
    AuditedData,
    Dataset,
    DatasetPlugin,
    ExplainerPlugin,
    Explanation,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    LoadContext,
    ModelAdapter,
    ModelAdapterPlugin,
    ModelPasses,
    Options,
    Plugin,
    RegionSource,
    RegionSourcePlugin,
    Sample,
    SampleInfo,
    StepParts,
)
from xai_audit.errors import DataError, ModelError, PlanError, XaiAuditError
from xai_audit.files import shown as shown_path

__all__ = [
    "__version__",
    # hooks and plugin kinds
    "hookimpl",
    "Plugin",
    "Options",
    "ModelAdapterPlugin",
    "DatasetPlugin",
    "RegionSourcePlugin",
    "ExplainerPlugin",
    "HypothesisPlugin",
    "DiscovererPlugin",
    # the objects that travel
    "Sample",
    "SampleInfo",
    "Dataset",
    "ModelAdapter",
    "RegionSource",
    "LoadContext",
    "Explanation",
    "ModelPasses",
    "HypothesisContext",
    "HypothesisResult",
    "StepParts",
    "AuditedData",
    "DiscoveryContext",
    "Candidate",
    "CUES",
    "CONFIRMATIONS",
    "FACE_REGIONS",
    "HOST_OPTIONS",
    # errors
    "XaiAuditError",
    "DataError",
    "ModelError",
    "PlanError",
    "shown_path",
    # the plan's own code (a model factory, a transform), imported from the plan's folder
    "import_object",
    "split_spec",
    "ImportProblem",
    # model input mapping
    "InputSpec",
    "Preprocess",
    # layers and batching
    "resolve_layer",
    "layer_activations",
    "first_tensor",
    "as_feature_map",
    "token_grid",
    "head_layer",
    "penultimate_activations",
    "best_batch_size",
    "fixed_batch_size",
    "batch_slices",
    "forward_in_best_layout",
    "in_best_layout",
    "prefers_channels_last",
    # images of samples
    "ImageView",
    "sample_chunks",
    "stack_images",
    # the skin-tone estimate (ITA) from pixels
    "skin_tone_angle",
    "skin_pixels",
    "srgb_to_lab",
    "MIN_SKIN_PIXELS",
    # interventions
    "Transform",
    "InterventionOptions",
    "InterventionRun",
    "intervention_result",
    "apply_and_predict",
    "compare",
    "subsample",
    "region_masks",
    "to_grayscale",
    "shrink_for_report",
    # statistics
    "ALPHA",
    "wilson_ci",
    "mcnemar_exact",
    "bootstrap_paired_diff_ci",
    "bootstrap_gap_ci",
    "bootstrap_two_sample_diff_ci",
    "chi2_homogeneity",
    "chi2_independence",
    "class_gain_test",
    "equivalence_test",
    "EQUIVALENCE_METHOD",
    "group_accuracies",
    "holm",
    "permutation_gap_test",
    "prediction_shift_matrix",
    "samples_for_ci_width",
    "two_proportion_test",
    # recommended fine-tuning data
    "recommendation",
    "augment_row",
    "COLUMNS",
    "AUGMENT_FRACTION",
    "DEFAULT_TARGET_WIDTH",
    # figures
    "FIGURE_KINDS",
    "COMMON_FIELDS",
    "array_ref",
    "check_figure",
]
