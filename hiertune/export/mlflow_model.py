"""The MLflow pyfunc flavour of an exported model, logged as a model from code.

MLflow copies this file and the hiertune package into the logged model and runs this file to
rebuild the model; the model directory rides along as the `model_dir` artifact and is loaded
exactly as `hiertune predict` loads it (safetensors and JSON only). Input: a DataFrame with an
`image` column of file paths or raw encoded bytes. Output: one row per image with the
submission's columns and both novelty scores.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from hiertune.data.images import decode_image
from hiertune.export.predictor import ExportedModel


class HiertunePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = ExportedModel.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        size = self.model.cfg.data_size
        names, pixels = [], []
        for i, item in enumerate(model_input["image"]):
            if isinstance(item, (bytes, bytearray)):
                name, data = f"row {i}", bytes(item)
            else:
                name, data = str(item), Path(item).read_bytes()
            names.append(name)
            pixels.append(decode_image(data, size, name)[0])
        p = self.model.predict_images(names, np.stack(pixels))
        return pd.DataFrame({"image": p.names, "superclass_index": p.superclass, "subclass_index": p.subclass,
                             "novelty_score_super": p.scores.super_score.numpy(),
                             "novelty_score_sub": p.scores.sub_score.numpy()})


mlflow.models.set_model(HiertunePyfunc())
