"""Planning a fine-tuning job with no Azure at hand, from the descriptions kept in the project."""

from __future__ import annotations

import logging
from datetime import date, datetime, timezone

from shared.errors import InvalidParameterError
from shared.ml.azureml.catalog import ComponentInterface, check_usable, offline_base_models, offline_gpus_per_size
from shared.ml.azureml.compute import FinetuneCompute, check_finetune_size, gpus_per_node
from shared.ml.azureml.config import LATEST, AzureMLConfig
from shared.ml.azureml.pipeline import FinetunePlan, plan_finetune_job
from shared.ml.port import FinetuneJobSpec

log = logging.getLogger(__name__)


def plan_offline(
    spec: FinetuneJobSpec, config: AzureMLConfig, base_model_version: str = LATEST, today: date | None = None
) -> FinetunePlan:
    """The plan the backend would make, with `component_spec.json` and `base_models.json` as the registry.

    A retired or archived base model is refused as the backend refuses it, on `today` (UTC by default).
    Only serverless compute can be planned: a cluster's size is known only to the workspace.
    """
    catalog = offline_base_models()
    base = catalog.get(spec.base_model)
    if base is None or base_model_version not in (LATEST, base.version):
        covered = ", ".join(f"{model.name}:{model.version}" for model in catalog.values())
        raise InvalidParameterError(
            f"the offline description covers {covered} only, not {spec.base_model}:{base_model_version}; "
            "plan without --offline to ask the registry"
        )
    for warning in check_usable(base, today or datetime.now(timezone.utc).date()):
        log.warning("%s", warning)
    if config.compute_cluster:
        raise InvalidParameterError(
            f"--offline cannot read the size of compute cluster {config.compute_cluster}; leave "
            "AUTOPILOT_AZUREML_COMPUTE empty to plan for serverless compute, or plan without --offline"
        )
    size = config.finetune_instance_type
    where = f"serverless instance type {size}"
    check_finetune_size(size, base, where)
    sizes = offline_gpus_per_size().items()
    compute = FinetuneCompute(size=size, gpus_per_node=gpus_per_node(size, sizes, where))
    return plan_finetune_job(
        spec,
        base,
        ComponentInterface.from_json(),
        compute,
        datastore=config.datastore,
        container=config.training_container,
    )
