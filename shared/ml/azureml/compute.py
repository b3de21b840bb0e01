"""Compute checks made before anything is submitted or deployed, as the walkthrough makes them.

A cluster in failed provisioning state is refused; the size (of the cluster, or the serverless
instance type) must be in the model's fine-tuning allow list (its `finetune_compute_allow_list` tag,
or `system_metadata.supportedComputes.finetuneComputes` in newer catalog models); GPUs per node come
from the workspace's list of sizes. A model that declares no allow list is refused: the checks fail
closed rather than send a job or a deployment to a size the model was never published for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidParameterError, NotFoundError
from shared.ml.azureml.catalog import FINETUNE_ALLOW_LIST_TAG, INFERENCE_ALLOW_LIST_TAG, SUPPORTED_COMPUTES, BaseModel
from shared.ml.azureml.errors import translated
from shared.ml.azureml.states import state_text

SERVERLESS = "serverless"
COMPUTE_INPUTS = ("compute_model_import", "compute_preprocess", "compute_finetune", "compute_model_evaluation")


@dataclass(frozen=True)
class FinetuneCompute:
    """Where the fine-tuning steps run: a named cluster, or serverless compute of one instance type."""

    size: str
    gpus_per_node: int
    cluster: str | None = None

    @property
    def serverless(self) -> bool:
        return self.cluster is None

    def job_inputs(self) -> dict[str, str]:
        """The component's compute inputs; serverless GPU steps also get the instance type."""
        if self.cluster is not None:
            return dict.fromkeys(COMPUTE_INPUTS, self.cluster)
        inputs = dict.fromkeys(COMPUTE_INPUTS, SERVERLESS)
        inputs["instance_type_finetune"] = self.size
        inputs["instance_type_model_evaluation"] = self.size
        return inputs

    def describe(self) -> str:
        where = f"cluster {self.cluster}" if self.cluster else "serverless compute"
        return f"{where}, {self.size}, {self.gpus_per_node} GPU(s) per node"


def check_finetune_size(size: str, model: BaseModel, where: str) -> None:
    """The walkthrough's allow-list check (case-insensitive); a model without an allow list is refused."""
    allowed = model.allow_list(FINETUNE_ALLOW_LIST_TAG)
    if allowed is None:
        metadata = f"system_metadata.supportedComputes.{SUPPORTED_COMPUTES[FINETUNE_ALLOW_LIST_TAG]}"
        raise InvalidParameterError(
            f"{where}: {model.name}:{model.version} declares no fine-tuning computes (neither a "
            f"{FINETUNE_ALLOW_LIST_TAG} tag nor {metadata}), so size {size} cannot be checked and the app does "
            "not fine-tune unchecked; choose a base model (AUTOPILOT_BASE_MODEL, or AUTOPILOT_BASE_MODEL_VERSION "
            "for another version) that declares them"
        )
    if size.lower() not in {name.lower() for name in allowed}:
        raise InvalidParameterError(
            f"{where}: size {size} is not in {model.name}:{model.version}'s fine-tuning allow list "
            f"({', '.join(allowed)}); use a cluster or instance type of one of those sizes"
        )


def gpus_per_node(size: str, sizes: Iterable[tuple[str, int | None]], where: str) -> int:
    """GPUs of `size` from the workspace's sizes; an unknown or GPU-less size names the available ones."""
    known = {name.lower(): (name, gpus) for name, gpus in sizes}
    if size.lower() not in known:
        available = ", ".join(sorted(name for name, _ in known.values()))
        raise InvalidParameterError(f"{where}: size {size} is not among the workspace's sizes; available: {available}")
    gpus = known[size.lower()][1]
    if not gpus:
        raise InvalidParameterError(f"{where}: size {size} has no GPU; fine-tuning needs a GPU size")
    return int(gpus)


def check_inference_instance_type(instance_type: str, allowed: list[str] | None, model: str) -> None:
    """The deployment's instance type must be in the model's `inference_compute_allow_list`; without one, refused.

    The app copies the base model's inference computes into that tag of every model it registers.
    """
    if allowed is None:
        raise InvalidParameterError(
            f"the model to deploy (base model {model}) has no {INFERENCE_ALLOW_LIST_TAG} tag (its base model declared "
            f"no inference computes, in a tag or in system_metadata.supportedComputes."
            f"{SUPPORTED_COMPUTES[INFERENCE_ALLOW_LIST_TAG]}), so instance "
            f"type {instance_type} cannot be checked and the app does not deploy unchecked; fine-tune a base model "
            "that declares them, or add the tag to the registered model (az ml model update --set tags...)"
        )
    if instance_type.lower() not in {name.lower() for name in allowed}:
        raise InvalidParameterError(
            f"instance type {instance_type} is not in {INFERENCE_ALLOW_LIST_TAG} of {model} ({', '.join(allowed)}); "
            "set AUTOPILOT_AZUREML_INFERENCE_INSTANCE_TYPE to one of those"
        )


def resolve_finetune_compute(workspace: Any, cluster: str, instance_type: str, model: BaseModel) -> FinetuneCompute:
    """Check the named cluster (or, without one, the serverless instance type) in the workspace."""
    if cluster:
        from azure.core.exceptions import ResourceNotFoundError

        where = f"compute cluster {cluster}"
        with translated(f"reading {where}"):
            try:
                compute = workspace.compute.get(cluster)
            except ResourceNotFoundError:
                raise NotFoundError(
                    f"{where} does not exist in the workspace; create it or set AUTOPILOT_AZUREML_COMPUTE"
                ) from None
        if state_text(getattr(compute, "provisioning_state", None)).lower() == "failed":
            raise InvalidParameterError(
                f"{where} is in failed provisioning state; "
                "recreate it or name another cluster in AUTOPILOT_AZUREML_COMPUTE"
            )
        size = str(compute.size)
    else:
        where, size = f"serverless instance type {instance_type}", instance_type
    check_finetune_size(size, model, where)
    with translated("listing the workspace's VM sizes"):
        sizes = [(str(vm.name), vm.gpus) for vm in workspace.compute.list_sizes()]
    return FinetuneCompute(size=size, gpus_per_node=gpus_per_node(size, sizes, where), cluster=cluster or None)
