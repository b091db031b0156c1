"""The MLServer side of the runtime benchmark: a TorchScript model as an MLServer custom runtime.

It is the small runtime an MLServer user would write for a TorchScript file (MLServer ships none):
decode the one input with MLServer's own NumPy codec, run the module under `torch.inference_mode`,
encode the one output. `predict` runs inline on the event loop, as MLServer's own runtimes do with
`parallel_workers: 0`. Thread settings come from the environment (OMP_NUM_THREADS), which the
benchmark sets identically for both servers.

This file runs inside the MLServer virtual environment, never the project's; it is found through
PYTHONPATH, which the benchmark points at this folder.
"""

from __future__ import annotations

import logging
import os

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

logger = logging.getLogger("mlserver.torchscript")


class TorchScriptModel(MLModel):
    """One TorchScript module, one input, one output (names from model-settings.json)."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        threads = os.environ.get("OMP_NUM_THREADS")
        if threads:
            # torch reads OMP_NUM_THREADS at import; set it explicitly too, so a library that
            # imported torch earlier cannot leave a different value in place.
            torch.set_num_threads(int(threads))
        self._module = torch.jit.load(uri, map_location="cpu").eval()
        self._output_name = self._settings.outputs[0].name if self._settings.outputs else "OUTPUT__0"
        # Warm-up, as the other server does before reporting ready: the first TorchScript calls
        # run the profiling executor and would otherwise land in the measured window.
        if self._settings.inputs:
            row_shape = [int(d) for d in self._settings.inputs[0].shape[1:]]
            with torch.inference_mode():
                for batch in (1, 2, max(1, self._settings.max_batch_size)):
                    self._module(torch.zeros([batch, *row_shape]))
        logger.info("loaded %s from %s with %d torch threads", self.name, uri, torch.get_num_threads())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        array = NumpyCodec.decode_input(payload.inputs[0])
        with torch.inference_mode():
            result = self._module(torch.from_numpy(array)).numpy()
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(self._output_name, result)],
        )
