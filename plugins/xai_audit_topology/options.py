"""The options of the ``topology`` explainer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from xai_audit.api import Options


class TopologyOptions(Options):
    layer: str | None = Field(None, description="layer whose activations form the cloud; default: the model's last conv layer")
    cloud: Literal["images", "latent"] = Field(
        "images", description="one point per image, or one per spatial position (the channel vector there)"
    )
    pool: Literal["mean", "max", "flatten"] = Field("mean", description="how an image's activation map becomes one point")
    tokens: Literal["class", "mean"] = Field(
        "class", description="how a transformer's tokens (N, tokens, hidden) become one point per image: the class "
        "token (the first), or the mean over the tokens")
    dims: list[int] = Field(default_factory=lambda: [0, 1, 2], description="homology dimensions")
    cloud_samples: int | None = Field(None, ge=10, description="images in the cloud (seeded subset); default: every audited sample")
    points: int = Field(20000, ge=10, description="at most this many points before landmarks (seeded subset)")
    pca_dims: int = Field(64, ge=2, description="reduce the activations to at most this many principal components")
    landmarks: int = Field(200, ge=10, description="points persistence is computed on")
    landmark_method: Literal["farthest", "random"] = "farthest"
    significance: Literal["monte-carlo", "universal", "bootstrap"] = Field("monte-carlo", description=(
        "the test of each feature: Gaussian noise clouds through the same pipeline (monte-carlo), Bobrowski and "
        "Skraba's universal law for loops and voids, no simulation (universal; components keep the Monte Carlo), "
        "or a bootstrap confidence set of the diagram (bootstrap, Fasy et al.); the published FER study's tdads "
        "offers the last two"))
    null_clouds: int = Field(19, ge=0, description="Gaussian clouds (monte-carlo) or resamples (bootstrap) in the "
                                                   "significance test (0: no test, but the universal law's)")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level, split over the dimensions")
    collapse_steps: int = Field(20, ge=0, description="gradient steps that collapse one feature (0: none)")
    collapse_dim: Literal["auto", 0, 1, 2] = Field("auto", description="dimension of the feature to collapse")
    step_size: float = Field(0.02, gt=0, le=1, description="largest change of a pixel per step")
    layers: list[str] | None = Field(None, description="layers for the per-layer summaries; default: up to 4 conv layers")
    per_class: bool = Field(True, description="summaries per predicted class too")
    mapper: bool = True
    mapper_intervals: int = Field(8, ge=2, le=30)
    mapper_overlap: float = Field(0.3, ge=0, lt=1)
    n_threads: int = Field(2, ge=1, description="threads for persistence")
    show: int = Field(6, ge=1, le=24, description="modified images shown before and after")
    mapper_nodes: int = Field(8, ge=0, le=24, description=(
        "the largest Mapper nodes shown by what activates them (TopoAct): the mean of their images and the images "
        "nearest their centre; 0: none"))
    mapper_examples: int = Field(3, ge=1, le=8, description="images shown beside each such node's mean")
    landscapes: bool = Field(False, description=(
        "activation landscapes (Wheeler et al.): every level of the persistence landscape of each layer's "
        "activations, for all images and per class; 'layers' (default: the conv and linear layers, at most 6)"))
    latent_landscapes: bool = Field(True, description="with landscapes: the channel-vector landscape of each conv layer too")
    networks: list[str] = Field(default_factory=list, description=(
        "with landscapes: weight files of the model's architecture trained from other seeds; the landscapes are "
        "averaged over the model and these (paths relative to the plan)"))
    checkpoints: list[str] = Field(default_factory=list, description=(
        "with landscapes: weight files saved along one training run, oldest first; each layer's landscape norm "
        "is followed along them (paths relative to the plan)"))

    @field_validator("networks", "checkpoints")
    @classmethod
    def _weight_files(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """Relative paths are read from the plan's folder when the plan says where that is, and must exist."""
        base = (info.context or {}).get("base_dir")
        if base is None:
            return value
        out = []
        for entry in value:
            path = Path(entry).expanduser()
            path = path if path.is_absolute() else Path(base) / path
            if not path.is_file():
                raise ValueError(f"weight file {entry!r} not found (looked for {path})")
            out.append(str(path))
        return out

    @model_validator(mode="after")
    def _with_landscapes(self) -> "TopologyOptions":
        given = [name for name in ("networks", "checkpoints") if getattr(self, name)]
        if given and not self.landscapes:
            raise ValueError(f"'{given[0]}' is read for the activation landscapes: set 'landscapes: true' with it")
        return self

    @field_validator("dims")
    @classmethod
    def _known_dims(cls, value: list[int]) -> list[int]:
        if not value or any(k not in (0, 1, 2, 3) for k in value):
            raise ValueError("dims must be a non-empty list of 0, 1, 2 or 3")
        return sorted(set(value))
