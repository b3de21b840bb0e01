"""What the app reads from the `azureml` registry: the pipeline component's inputs and the base model's
tags, system metadata and lifecycle.

Both come either from the registry (the SDK's component, the registry's REST body of the model) or, for
`autopilot plan --offline` and the tests, from the JSON descriptions kept next to this module. Nothing
here imports the SDK.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from shared.errors import InvalidParameterError

HERE = Path(__file__).parent
COMPONENT_SPEC = HERE / "component_spec.json"
BASE_MODELS = HERE / "base_models.json"
VM_SIZES = HERE / "vm_sizes.json"

PIPELINE_COMPONENT = "chat_completion_pipeline"
FINETUNE_ALLOW_LIST_TAG = "finetune_compute_allow_list"
INFERENCE_ALLOW_LIST_TAG = "inference_compute_allow_list"
MODEL_DEFAULTS_TAG = "model_specific_defaults"
# Since azureml-assets PRs #5150/#5190 (June 2026) catalog models declare their computes here instead of
# in the allow-list tags, which were removed: each tag falls back to its system metadata list.
SUPPORTED_COMPUTES = {FINETUNE_ALLOW_LIST_TAG: "finetuneComputes", INFERENCE_ALLOW_LIST_TAG: "inferenceComputes"}
# Lifecycle dates: key under system_metadata.deprecation (newer specs), the tag older specs used, and
# what the date means. Retirement refuses the model; the others are warnings.
LIFECYCLE_DATES = {
    "finetuneDeprecationDate": ("FinetuneDeprecationDate", "deprecated for fine-tuning"),
    "finetuneRetirementDate": ("FinetuneRetirementDate", "retired for fine-tuning"),
    "inferenceLegacyDate": ("InferenceLegacyDate", "legacy for inference"),
    "inferenceDeprecationDate": ("InferenceDeprecationDate", "deprecated for inference"),
    "inferenceRetirementDate": ("InferenceRetirementDate", "retired for inference"),
}
RETIREMENT_DATES = ("finetuneRetirementDate", "inferenceRetirementDate")


@dataclass(frozen=True)
class InputSpec:
    """One input of the pipeline component."""

    name: str
    type: str
    optional: bool = True
    default: Any = None
    enum: tuple[str, ...] = ()
    min: float | None = None

    @property
    def literal(self) -> bool:
        """A value input (string, integer, number, boolean), not a data or model asset."""
        return self.type in ("string", "integer", "number", "boolean")


@dataclass(frozen=True)
class ComponentInterface:
    name: str
    version: str
    inputs: dict[str, InputSpec]
    outputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: Path = COMPONENT_SPEC) -> ComponentInterface:
        """The offline description kept in the project (`component_spec.json`)."""
        data = json.loads(path.read_text())
        return cls(
            name=data["name"],
            version=str(data["version"]),
            inputs={name: _input_spec(name, spec) for name, spec in data["inputs"].items()},
            outputs={name: spec["type"] for name, spec in data["outputs"].items()},
        )

    @classmethod
    def of_component(cls, component: Any) -> ComponentInterface:
        """The interface of an azure-ai-ml component (from the registry, or loaded from a local YAML)."""
        inputs = {}
        for name, given in component.inputs.items():
            spec: dict[str, Any] = {"type": given.type, "optional": bool(given.optional)}
            for key in ("default", "enum", "min"):
                value = getattr(given, key, None)
                if value is not None:
                    spec[key] = value
            inputs[name] = _input_spec(name, spec)
        outputs = {name: str(given.type) for name, given in component.outputs.items()}
        return cls(name=str(component.name), version=str(component.version), inputs=inputs, outputs=outputs)

    def to_dict(self) -> dict[str, Any]:
        """Comparable with `component_spec.json`'s inputs and outputs."""
        inputs: dict[str, Any] = {}
        for name, spec in self.inputs.items():
            entry: dict[str, Any] = {"type": spec.type, "optional": spec.optional}
            if spec.default is not None:
                entry["default"] = spec.default
            if spec.enum:
                entry["enum"] = list(spec.enum)
            if spec.min is not None:
                entry["min"] = spec.min
            inputs[name] = entry
        return {"name": self.name, "version": self.version, "inputs": inputs, "outputs": dict(self.outputs)}


def _input_spec(name: str, spec: dict[str, Any]) -> InputSpec:
    kind = str(spec["type"])
    default = spec.get("default")
    if default is not None:
        default = _typed_default(kind, default)
    minimum = spec.get("min")
    return InputSpec(
        name=name,
        type=kind,
        optional=bool(spec.get("optional", True)),
        default=default,
        enum=tuple(str(value) for value in spec.get("enum") or ()),
        min=float(minimum) if minimum is not None else None,
    )


def _typed_default(kind: str, default: Any) -> Any:
    # The SDK reports defaults and minimums as strings once a component went through its schema.
    if kind == "integer":
        return int(default)
    if kind == "number":
        return float(default)
    if kind == "string":
        return str(default)
    return default


@dataclass(frozen=True)
class Lifecycle:
    """When a registry model leaves service (UTC days, keyed as under `system_metadata.deprecation`), and
    whether the registry archived it."""

    dates: dict[str, date] = field(default_factory=dict)
    archived: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The dates as ISO days, and `isArchived` when set ({} for a model with no lifecycle at all)."""
        entries: dict[str, Any] = {key: day.isoformat() for key, day in self.dates.items()}
        if self.archived:
            entries["isArchived"] = True
        return entries


@dataclass(frozen=True)
class BaseModel:
    """The registry model a job fine-tunes; `id` is the asset id passed as `mlflow_model_path`.

    `system_metadata` and `archived` come from the registry's REST body: azure-ai-ml's `Model` drops them.
    """

    name: str
    version: str
    id: str
    tags: dict[str, str] = field(default_factory=dict)
    system_metadata: dict[str, Any] = field(default_factory=dict)
    archived: bool = False

    @classmethod
    def from_json(cls, name: str = "", path: Path = BASE_MODELS) -> BaseModel:
        """A model of the offline catalog (`base_models.json`): `name`, or the default base model."""
        return offline_base_models(path)[name or _catalog_document(path)["default"]]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> BaseModel:
        """A model as its azureml-assets spec.yaml declares it (the offline catalog's entries)."""
        return cls(
            name=str(spec["name"]),
            version=str(spec["version"]),
            id=str(spec["id"]),
            tags={str(key): str(value) for key, value in (spec.get("tags") or {}).items()},
            system_metadata=dict(spec.get("system_metadata") or {}),
            archived=bool(spec.get("isArchived", False)),
        )

    @classmethod
    def from_rest(cls, name: str, version: str, body: Mapping[str, Any]) -> BaseModel:
        """Model version `name:version` from the registry's REST body (camelCase, see `registry_model_body`)."""
        properties = body.get("properties") or {}
        # The SDK's own registry create path writes `properties.system_metadata` (azure-ai-ml 1.35.2,
        # _restclient/model_dataplane/operations/_models_operations.py) while ARM bodies are camelCase:
        # read either spelling.
        system = properties.get("systemMetadata") or properties.get("system_metadata") or {}
        return cls(
            name=name,
            version=version,
            id=str(body["id"]),
            tags={str(key): str(value) for key, value in (properties.get("tags") or {}).items()},
            system_metadata=dict(system),
            archived=bool(properties.get("isArchived", False)),
        )

    def details(self) -> dict[str, Any]:
        """Name, version and id, with the lifecycle when the registry gives one (what `autopilot plan` shows)."""
        details: dict[str, Any] = {"name": self.name, "version": self.version, "id": self.id}
        lifecycle = self.lifecycle.to_dict()
        if lifecycle:
            details["lifecycle"] = lifecycle
        return details

    @property
    def lifecycle(self) -> Lifecycle:
        """Dates from `system_metadata.deprecation`, else from the tags older specs carried."""
        deprecation = self.system_metadata.get("deprecation") or {}
        dates = {}
        for key, (tag, _) in LIFECYCLE_DATES.items():
            raw = deprecation.get(key) or self.tags.get(tag)
            if raw:
                dates[key] = _day(raw, f"{key} of {self.name}:{self.version}")
        return Lifecycle(dates, self.archived)

    def allow_list(self, tag: str) -> list[str] | None:
        """A compute allow list: the tag, else its `system_metadata.supportedComputes` list; None with neither."""
        if tag in self.tags:
            value = literal_tag(self, tag)
            where = f"tag {tag}"
        else:
            value = (self.system_metadata.get("supportedComputes") or {}).get(SUPPORTED_COMPUTES.get(tag, ""))
            where = f"system_metadata.supportedComputes.{SUPPORTED_COMPUTES.get(tag, '')}"
            if value is None:
                return None
        if not isinstance(value, (list, tuple)):
            raise InvalidParameterError(f"{where} of {self.name}:{self.version} is not a list: {value!r}")
        return [str(item) for item in value]

    def model_defaults(self) -> dict[str, Any]:
        """The `model_specific_defaults` tag as a dict ({} without the tag)."""
        if MODEL_DEFAULTS_TAG not in self.tags:
            return {}
        value = literal_tag(self, MODEL_DEFAULTS_TAG)
        if not isinstance(value, dict):
            raise InvalidParameterError(f"tag {MODEL_DEFAULTS_TAG} of {self.name}:{self.version} is not a dict")
        return {str(key): item for key, item in value.items()}


def literal_tag(model: BaseModel, tag: str) -> Any:
    """A tag holding a Python literal as a string (how the registry stores lists and dicts), parsed."""
    raw = model.tags[tag]
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        pass
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidParameterError(
            f"tag {tag} of {model.name}:{model.version} is neither a Python literal nor JSON: {raw[:200]}"
        ) from None


def _day(raw: Any, what: str) -> date:
    # Older tags hold '2025-08-30', system metadata '2025-08-30T00:00:00.000000Z' (UTC): the day is enough.
    try:
        return date.fromisoformat(str(raw)[:10])
    except ValueError:
        raise InvalidParameterError(f"{what} is not a date: {raw!r}") from None


@cache
def _catalog_document(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def offline_base_models(path: Path = BASE_MODELS) -> dict[str, BaseModel]:
    """The models of the offline catalog by name (`base_models.json`)."""
    return {spec["name"]: BaseModel.from_spec(spec) for spec in _catalog_document(path)["models"]}


def suggested_replacement(name: str, path: Path = BASE_MODELS) -> str:
    """The model Microsoft suggests instead of retired model `name` ("" when it names none).

    The registry's model entries carry no replacement; the project records Microsoft's retirement table.
    """
    return str(_catalog_document(path)["suggested_replacements"]["models"].get(name, ""))


def retirement(model: BaseModel, today: date) -> str:
    """Why `model` can no longer be fine-tuned and served on `today` ("" while it can)."""
    lifecycle = model.lifecycle
    reasons = [
        f"{LIFECYCLE_DATES[key][1]} on {lifecycle.dates[key].isoformat()}"
        for key in RETIREMENT_DATES
        if key in lifecycle.dates and lifecycle.dates[key] <= today
    ]
    if lifecycle.archived:
        reasons.append("archived in the registry (isArchived)")
    if not reasons:
        return ""
    replacement = suggested_replacement(model.name)
    instead = f"; Microsoft names {replacement} as its replacement" if replacement else ""
    return f"base model {model.name}:{model.version} was {', '.join(reasons)}{instead}"


def check_usable(model: BaseModel, today: date) -> list[str]:
    """Refuse a retired or archived base model (`InvalidParameterError`); the warnings of its coming lifecycle.

    Retirement of fine-tuning or of inference refuses it: the app trains the model and then serves it.
    """
    refused = retirement(model, today)
    if refused:
        raise InvalidParameterError(
            f"{refused}. Set AUTOPILOT_BASE_MODEL (or the dataset manifest's base_model) to a current catalog model"
        )
    warnings = []
    for key, day in model.lifecycle.dates.items():
        meaning = LIFECYCLE_DATES[key][1]
        when = f"will be {meaning} on {day.isoformat()}" if day > today else f"is {meaning} since {day.isoformat()}"
        warnings.append(f"base model {model.name}:{model.version} {when}")
    return warnings


def unresolved_hint(name: str, today: date) -> str:
    """What to check when the registry does not return base model `name`, with its retirement when known."""
    known = offline_base_models().get(name)
    retired = retirement(known, today) if known is not None else ""
    # Archived assets are hidden from list queries, and the SDK resolves label `latest` with one.
    # https://learn.microsoft.com/cli/azure/ml/model#az-ml-model-archive
    return (
        f"{retired + '. ' if retired else ''}Archived models are hidden from the registry's list queries, so "
        "label latest no longer finds them. Check AUTOPILOT_BASE_MODEL / AUTOPILOT_BASE_MODEL_VERSION or the "
        "dataset manifest's base_model"
    )


def registry_model_body(registry: Any, name: str, version: str) -> dict[str, Any]:
    """The registry's REST body of model version `name:version` (camelCase), whose `properties` keep the
    `isArchived` flag and the system metadata that azure-ai-ml's `Model` entity drops."""
    # azure-ai-ml 1.35.2 (pinned in requirements.txt) reads registry models with ModelOperations._get,
    # which returns the registry's JSON (_utils/_registry_utils.get_registry_versioned_asset) as an
    # arm_ml_service ModelVersion mapping; `get` then turns it into a Model without those two fields.
    rest = registry.models._get(name, version)
    body: dict[str, Any] = rest.as_dict()
    return body


def offline_gpus_per_size(path: Path = VM_SIZES) -> dict[str, int]:
    """GPUs per node of common sizes, for planning without a workspace."""
    return {name: int(gpus) for name, gpus in json.loads(path.read_text())["sizes"].items()}
