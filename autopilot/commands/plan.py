"""`autopilot plan DATASET_DIR [--json] [--offline]`: the fine-tuning pipeline job the app would submit.

Nothing is uploaded or submitted. Online, the plan asks the registry (component, base model) and the
workspace (compute) exactly as the Azure ML backend does; `--offline` uses the project's description
of `chat_completion_pipeline` and of the catalog's base models instead, so it runs anywhere. Either way
a retired or archived base model is refused (exit 1) before anything would ask for a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared.errors import AutopilotError

EXIT_REFUSED, EXIT_USAGE = 1, 2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "plan",
        help="show the fine-tuning pipeline job the app would submit for a dataset folder (nothing is submitted)",
        description=(
            "Print the Azure ML pipeline job the app would submit for DATASET_DIR (<dataset>/<version>/ with "
            "train/test/validation files and an optional autopilot.json): every input with its value and where "
            "it came from (app, default, model tag, manifest), compute, display name, experiment and tags. "
            "Exit code 0: planned; 1: the backend would refuse it; 2: usage error."
        ),
    )
    parser.add_argument("folder", type=Path, metavar="DATASET_DIR", help="a dataset version folder")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the project's description of chat_completion_pipeline and the base models, not Azure",
    )
    parser.add_argument("--dataset", metavar="NAME", help="dataset name (default: the folder's parent's name)")
    parser.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from autopilot.commands.upload import dataset_files, expected_run_id
    from shared.datasets import MANIFEST_NAME, Manifest, split_of

    folder: Path = args.folder.resolve()
    if not folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    files = dataset_files(folder)
    splits = {split: path for path in files if (split := split_of(path.name))}
    if "train" not in splits:
        print(f"error: {args.folder} has no train file (train*.jsonl, .jsonl.gz or .parquet)", file=sys.stderr)
        return EXIT_USAGE
    dataset, version = args.dataset or folder.parent.name, folder.name
    try:
        manifest_path = folder / MANIFEST_NAME
        manifest = Manifest.parse(manifest_path.read_bytes(), str(manifest_path)) if manifest_path.exists() else None
        document = plan_document(dataset, version, splits, manifest, expected_run_id(dataset, files), args.offline)
    except AutopilotError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(json.dumps(document, indent=1) if args.json else format_plan(document))
    return 0


def plan_document(
    dataset: str, version: str, splits: dict[str, Path], manifest: Any, run_id: str, offline: bool
) -> dict[str, Any]:
    """The plan as `--json` prints it, with the dataset's files and where they would be uploaded."""
    from autopilot.commands.common import settings_env
    from shared.ml.azureml.config import AzureMLConfig
    from shared.ml.port import RUN_TAG, FinetuneJobSpec
    from shared.settings import ML_BACKEND, Settings
    from shared.stages.training import job_name_for
    from shared.storage import AzureBlobStore

    # The plan is what the Azure ML backend would submit, whichever backend the settings name.
    settings = Settings.from_env({**settings_env(), ML_BACKEND: "azureml"})
    config = AzureMLConfig.from_settings(settings)
    store = AzureBlobStore(settings.storage_connection)
    uploaded = {
        split: f"{dataset}/{version}/validated/{split}.jsonl"
        for split in ("train", "test", "validation")
        if split in splits
    }
    urls = {split: store.url(settings.training_container, name) for split, name in uploaded.items()}
    spec = FinetuneJobSpec(
        job_name=job_name_for(run_id),
        run_id=run_id,
        dataset=dataset,
        base_model=(manifest and manifest.base_model) or settings.base_model,
        train_file=urls["train"],
        test_file=urls.get("test"),
        validation_file=urls.get("validation"),
        parameters=dict(manifest.parameters) if manifest else {},
        tags={RUN_TAG: run_id, "dataset": dataset, "dataset_version": version},
    )
    base_model_version = (manifest and manifest.base_model_version) or settings.base_model_version
    if offline:
        from shared.ml.azureml.offline import plan_offline

        plan = plan_offline(spec, config, base_model_version)
        source = "offline: shared/ml/azureml/component_spec.json and base_models.json"
    else:
        from shared.ml.azureml.backend import AzureMLBackend

        plan, _ = AzureMLBackend.from_settings(settings).plan_finetune(spec, base_model_version)
        source = f"registry {config.registry} and the workspace"
    files = {
        split: {"local": str(splits[split]), "uploaded_to": f"{settings.training_container}/{uploaded[split]}"}
        for split in uploaded
    }
    return {"run_id": run_id, "submitted": False, "source": source, "files": files, **plan.to_dict()}


def format_plan(document: dict[str, Any]) -> str:
    """The plan as text: a header, the inputs with their sources, what was left out, the tags."""
    base, compute = document["base_model"], document["compute"]
    where = f"cluster {compute['cluster']}" if compute["cluster"] else "serverless"
    lines = [
        f"Pipeline job {document['job_name']} (run {document['run_id']}; not submitted)",
        f"  source        {document['source']}",
        f"  display name  {document['display_name']}",
        f"  experiment    {document['experiment_name']}",
        f"  component     {document['component']} -> outputs "
        + ", ".join(f"{name} <- {output}" for name, output in document["outputs"].items()),
        f"  base model    {base['name']}:{base['version']} ({base['id']})",
        *(
            ["  lifecycle     " + ", ".join(f"{key} {value}" for key, value in base["lifecycle"].items())]
            if base.get("lifecycle")
            else []
        ),
        f"  compute       {where}, {compute['size']}, {compute['gpus_per_node']} GPU(s) per node",
        "  settings      " + ", ".join(f"{key}={json.dumps(value)}" for key, value in document["settings"].items()),
        "  files",
    ]
    lines += [f"    {split:<12}{item['local']} -> {item['uploaded_to']}" for split, item in document["files"].items()]
    width = max(len(name) for name in document["inputs"]) + 2
    lines += ["  inputs", f"    {'NAME':<{width}}{'SOURCE':<11}VALUE"]
    for name, item in document["inputs"].items():
        over = ", ".join(f"{old['source']} {json.dumps(old['value'])}" for old in item.get("replaced", []))
        lines.append(
            f"    {name:<{width}}{item['source']:<11}{json.dumps(item['value'])}{f' (over {over})' if over else ''}"
        )
    if document["ignored"]:
        lines.append("  left out")
        lines += [f"    {name}: {why}" for name, why in document["ignored"].items()]
    lines.append("  tags")
    lines += [f"    {key} = {value}" for key, value in document["tags"].items()]
    return "\n".join(lines)
