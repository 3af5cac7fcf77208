"""Launch the cross-modal fusion graph with ``ros2 launch``.

    ros2 launch cmr_fusion_ros fusion_launch.py params_file:=/path/fusion.yaml use_sim_time:=true mode:=split

Arguments:
  params_file   parameters YAML in the ``node_name: ros__parameters:`` form (default: the package's
                config/fusion.yaml for all_in_one, config/split.yaml for split, when it exists)
  use_sim_time  true | false (default false): follow /clock, e.g. from ``cmr-fusion replay --clock``
  mode          all_in_one (one fusion_node) | split (camera/lidar/radar encoder_node + memory_node)
  namespace     namespace for every node (default: none)

The nodes come from :func:`cmr_fusion_ros.ros.graph.build_graph`, the same description ``cmr-fusion launch`` uses on
machines without ``ros2 launch``.
"""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from cmr_fusion_ros.paths import config_file
from cmr_fusion_ros.ros.graph import PACKAGE, Mode, build_graph, default_params_name, normalize_namespace

TRUE = ("true", "1", "yes", "on")


def _default_params_file(mode: str) -> str:
    path = config_file(default_params_name(mode))  # the installed share/cmr_fusion_ros/config (or the source tree)
    return str(path) if path.is_file() else ""


def _nodes(context, *args, **kwargs) -> list[Node]:
    mode = LaunchConfiguration("mode").perform(context)
    params_file = LaunchConfiguration("params_file").perform(context).strip()
    if params_file == "default":
        params_file = _default_params_file(mode)
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).strip().lower() in TRUE
    namespace = normalize_namespace(LaunchConfiguration("namespace").perform(context))
    actions = []
    for spec in build_graph(mode):
        parameters: list = [params_file] if params_file else []
        parameters.append({**dict(spec.parameters), "use_sim_time": use_sim_time})
        actions.append(Node(package=PACKAGE, executable=spec.executable, name=spec.name, namespace=namespace,
                            parameters=parameters, output="screen", emulate_tty=True))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="default",
                              description="parameters YAML (node_name: ros__parameters: form); 'default' = the "
                                          "package's config file for the mode; empty = none"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="true | false: follow /clock (e.g. from cmr-fusion replay --clock)"),
        DeclareLaunchArgument("mode", default_value=Mode.ALL_IN_ONE.value, choices=[m.value for m in Mode],
                              description="all_in_one: one fusion_node; split: an encoder_node per modality "
                                          "+ memory_node"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace for every node"),
        OpaqueFunction(function=_nodes),
    ])
