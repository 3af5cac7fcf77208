"""ROS 2 parameters <-> FusionConfig: declaration with descriptors, validation at start, run-time tuning.

Every key of :data:`cmr_fusion_ros.core.config.PARAMETERS` is declared with its description, range and
``read_only`` flag. Values given on the command line or in a ``--params-file`` are validated by ``FusionConfig``
before anything is declared, so a bad value stops the node at start with the key, the value and what is allowed.
Integers given for floating-point parameters (``debounce_s: 10``) are accepted, as users expect from YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from cmr_fusion_ros.core.config import PARAMETERS, FusionConfig, ParamSpec, flatten, unflatten
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.policy import PolicyConfig

__all__ = ["declare_fusion_parameters", "ROS_OWN_PARAMETERS", "on_policy_change"]

# Parameters that rclpy or the launch system own; never validated as ours.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")
_SPECS = {p.name: p for p in PARAMETERS}

_INT_MAX = 2**31 - 1


def _is_ours(name: str, prefixes: tuple[str, ...] = ()) -> bool:
    return name not in ROS_OWN_PARAMETERS and not name.startswith("qos_overrides.") and (
        not prefixes or name.split(".", 1)[0] in prefixes)


def _ptype(value: Any) -> int:
    if isinstance(value, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(value, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(value, float):
        return ParameterType.PARAMETER_DOUBLE
    if isinstance(value, str):
        return ParameterType.PARAMETER_STRING
    if isinstance(value, (list, tuple)):
        return ParameterType.PARAMETER_STRING_ARRAY
    raise TypeError(value)


def _param_type(default: Any) -> Parameter.Type:
    return Parameter.Type(_ptype(default))


def _descriptor(spec: ParamSpec | None, name: str, value: Any) -> ParameterDescriptor:
    d = ParameterDescriptor(name=name, type=_ptype(value), read_only=spec.read_only if spec else True,
                            description=spec.description if spec else "")
    if spec and (spec.min is not None or spec.max is not None):
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            lo = int(spec.min) if spec.min is not None else 0
            hi = int(min(spec.max, _INT_MAX)) if spec.max is not None else _INT_MAX
            d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=0)]
            d.additional_constraints = f"integer in [{lo}, {hi}]"
        elif isinstance(value, float):
            lo = float(spec.min) if spec.min is not None else 0.0
            hi = float(spec.max) if spec.max is not None else 1e9
            d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
            d.additional_constraints = f"number in [{lo}, {hi}]"
    return d


def declare_fusion_parameters(node: Node, *, sections: Iterable[str] = (), base: FusionConfig | None = None,
                              own: Iterable[str] = ()) -> FusionConfig:
    """Validate the node's overrides into a FusionConfig, then declare every parameter; returns the config.

    ``sections``: only these top-level sections are declared and accepted (e.g. a split encoder node has no
    ``memory``); empty = all. ``own``: names of node-specific parameters the node declares itself.
    """
    prefixes = tuple(sections)
    skip = set(own)
    defaults = flatten((base or FusionConfig()).to_dict())
    if prefixes:
        defaults = {k: v for k, v in defaults.items() if k.split(".", 1)[0] in prefixes}
    overrides = {name: p.value for name, p in getattr(node, "_parameter_overrides", {}).items()
                 if name not in skip and _is_ours(name, ())}
    values = dict(defaults)
    for name, value in overrides.items():
        default = defaults.get(name)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)) and not value:
            value = []
        values[name] = value
    unknown = [n for n in overrides if n not in defaults]
    if unknown:
        raise ConfigError(unknown[0], overrides[unknown[0]], "a parameter of this node (see config/*.yaml)")
    config = FusionConfig.from_dict(unflatten(values), source=f"parameters of node {node.get_name()}")
    for name, value in values.items():
        value = list(value) if isinstance(value, tuple) else value
        if name in overrides:  # the validated (type-coerced) value replaces the raw override
            node._parameter_overrides[name] = Parameter(name, _param_type(defaults[name]), value)
        node.declare_parameter(name, value, _descriptor(_SPECS.get(name), name, defaults[name]))
    return config


def on_policy_change(node: Node, current: Callable[[], FusionConfig], apply: Callable[[PolicyConfig], None]):
    """A set-parameters callback: validates changes of ``policy.*`` and applies them; read-only ones are refused by
    rclpy itself (their descriptors say so)."""

    def callback(params: list[Parameter]) -> SetParametersResult:
        changed = {p.name: p.value for p in params if p.name.startswith("policy.")}
        if not changed:
            return SetParametersResult(successful=True)
        flat = flatten(current().to_dict()["policy"], "policy")
        for name, value in changed.items():
            if isinstance(flat.get(name), float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            flat[name] = list(value) if isinstance(value, tuple) else value
        try:
            policy = PolicyConfig.from_dict(unflatten(flat)["policy"])
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        apply(policy)
        node.get_logger().info(f"policy updated: {', '.join(f'{k}={v}' for k, v in changed.items())}")
        return SetParametersResult(successful=True)

    return callback
