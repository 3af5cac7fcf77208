"""fusion_node with fast stand-in encoders (no trained models needed), for the soak test:
``cmr-fusion launch --node-module fusion_node=tests.process.stress_soak_node``. Everything else is the real node."""

from __future__ import annotations

from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.ros import fusion_node

from tests.process.stress_crash_child import HashEncoder

_from_config = FusionPipeline.from_config.__func__


def _standin_from_config(cls, config, **kwargs):
    kwargs["load_encoders"] = False
    pipeline = _from_config(cls, config, **kwargs)
    pipeline.encoders = {m: HashEncoder(config.memory.dim) for m in config.enabled_modalities}
    return pipeline


def main(args=None):
    FusionPipeline.from_config = classmethod(_standin_from_config)
    fusion_node.main(args)


if __name__ == "__main__":
    main()
