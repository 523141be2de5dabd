"""Model listing and metadata: what a client needs to build a request."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ModelDep, RepositoryDep
from service.api.schemas import ModelList, ModelMetadata, ModelSummary
from service.runtime import ModelRuntime

router = APIRouter(prefix="/models", tags=["models"])


def summary(runtime: ModelRuntime) -> ModelSummary:
    m = runtime.manifest
    return ModelSummary(name=m.name, version=m.version, task=m.task, provider=runtime.provider)


@router.get("", response_model=ModelList)
async def list_models(repository: RepositoryDep) -> ModelList:
    return ModelList(models=[summary(r) for r in repository.models.values()])


@router.get("/{name}", response_model=ModelMetadata)
async def model_metadata(runtime: ModelDep) -> ModelMetadata:
    m = runtime.manifest
    inputs = m.inputs.model_dump() | {"num_features": m.inputs.num_features}
    return ModelMetadata(
        **summary(runtime).model_dump(), inputs=inputs, output=m.output.model_dump(),
        gru=m.gru.model_dump(), normalization="inside model.onnx: send raw values, get original units back",
        training=m.training.model_dump(), warnings=runtime.warnings, created_at=m.created_at.isoformat(),
        streaming=m.streaming.model_dump() | {"ragged_batches_exact": m.takes_lengths},
        state=m.state.model_dump(),
    )
