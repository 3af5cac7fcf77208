"""Town generation and route: deterministic per seed, varied, closed loops that revisit; renderers per frame."""

from __future__ import annotations

import numpy as np

from cmr_fusion_ros.sim.config import RouteConfig, SimConfig, TownConfig
from cmr_fusion_ros.sim.geometry import box_mesh, quat_from_matrix, quat_to_matrix
from cmr_fusion_ros.sim.route import SpeedProfile, make_loop
from cmr_fusion_ros.sim.sensors import optical_rotation
from cmr_fusion_ros.sim.session import SensorKind, plan_session
from cmr_fusion_ros.sim.town import Material, generate_town

SMALL = TownConfig(blocks_x=3, blocks_y=3, moving_cars=2, pedestrians=2)


def test_same_seed_same_town_other_seed_other_town() -> None:
    a, b, c = generate_town(5, SMALL), generate_town(5, SMALL), generate_town(6, SMALL)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.triangle_object, b.triangle_object)
    assert a.summary() == b.summary()
    assert a.summary() != c.summary()


def test_town_is_varied() -> None:
    town = generate_town(1)
    heights = [b.height for b in town.buildings]
    assert len(town.buildings) > 30 and max(heights) > 2.5 * min(heights)
    footprints = [(bx[2] - bx[0]) * (bx[3] - bx[1]) for b in town.buildings for bx in b.boxes[:1]]
    assert np.std(footprints) > 0.3 * np.mean(footprints)
    assert any(len(b.boxes) == 2 for b in town.buildings)  # L-shaped ones
    assert len({b.wall_colour for b in town.buildings}) == len(town.buildings)
    mats = set(town.objects.material)
    assert {Material.GROUND, Material.BUILDING, Material.POLE, Material.TRUNK, Material.FOLIAGE} <= mats
    assert town.counts["parking_slots"] > 50 and town.counts["trees"] > 50 and town.counts["poles"] > 20


def test_boxes_have_outward_normals() -> None:
    part = box_mesh((1.0, 2.0, 3.0), (2.0, 4.0, 6.0), yaw=0.3)
    v, t = part.vertices, part.triangles
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    centroid_dir = v[t].mean(axis=1) - np.array([1.0, 2.0, 3.0])
    assert (np.einsum("ij,ij->i", n, centroid_dir) > 0).all()


def test_loop_is_closed_and_continuous_and_in_the_lane() -> None:
    town = generate_town(2, SMALL)
    loop = make_loop(town, RouteConfig(loop_blocks_x=1, loop_blocks_y=1))
    steps = np.hypot(np.diff(loop.x), np.diff(loop.y))
    assert steps.max() < 0.1 and np.hypot(loop.x[-1] - loop.x[0], loop.y[-1] - loop.y[0]) < 0.1
    assert abs((loop.yaw[-1] - loop.yaw[0]) - 2 * np.pi) < 1e-9  # one full counter-clockwise turn
    # straight parts run along a street, one lane offset to the right of its centre line
    i0, j0, _, _ = loop.blocks
    south = np.abs(loop.yaw) < 1e-9
    assert np.allclose(loop.y[south], town.street_y[j0] - town.lane_offset)


def test_speed_profile_drives_laps_that_revisit() -> None:
    town = generate_town(2, SMALL)
    loop = make_loop(town, RouteConfig(loop_blocks_x=1, loop_blocks_y=1))
    sp = SpeedProfile(s0=10.0, v0=8.0, amplitude=0.15, phase=0.3)
    # distance is the integral of speed
    t = np.linspace(0, 60, 6001)
    v = np.array([sp.speed(x) for x in t])
    integral = np.concatenate([[0], np.cumsum((v[1:] + v[:-1]) / 2 * np.diff(t))])
    assert np.allclose(integral, [sp.distance(x) - sp.s0 for x in t], atol=1e-3)
    # after exactly one lap of distance, the ego is back at the same place
    t_lap = next(x for x in t if sp.distance(x) - sp.s0 >= loop.length)
    a, b = sp.state(loop, 0.0), sp.state(loop, t_lap)
    assert np.hypot(a.x - b.x, a.y - b.y) < 0.2


def test_optical_frame_is_rep103() -> None:
    R = optical_rotation()
    assert np.allclose(R @ [0, 0, 1], [1, 0, 0]) and np.allclose(R @ [1, 0, 0], [0, -1, 0])
    assert np.allclose(R @ [0, 1, 0], [0, 0, -1])
    assert np.allclose(quat_from_matrix(R), (-0.5, 0.5, -0.5, 0.5))
    assert np.allclose(quat_to_matrix(quat_from_matrix(R)), R)


def test_frames_render_deterministically_and_look_plausible() -> None:
    cfg = SimConfig.from_dict({"camera": {"width": 64, "height": 48}, "lidar": {"beams": 8, "columns": 128},
                               "town": {"blocks_x": 3, "blocks_y": 3}, "route": {"loop_blocks_x": 1, "loop_blocks_y": 1}})
    from cmr_fusion_ros.sim.session import simulate_session

    def first_frames(seed: int) -> dict:
        plan = plan_session(seed, 0, 0.3, cfg)
        return {s.kind: s.data for s in simulate_session(plan) if s.index == 0}

    a, b = first_frames(3), first_frames(3)
    for kind in (SensorKind.CAMERA, SensorKind.LIDAR, SensorKind.RADAR):
        assert np.array_equal(a[kind], b[kind])
    img = a[SensorKind.CAMERA]
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and img.std() > 10
    lidar = a[SensorKind.LIDAR]
    r = np.sqrt(lidar["x"] ** 2 + lidar["y"] ** 2 + lidar["z"] ** 2)
    assert len(lidar) > 300 and r.min() >= 0.9 and r.max() <= 100.5
    assert set(np.unique(lidar["ring"])) <= set(range(8))
    # the ground is 1.9 m below the lidar: the lowest beams' returns are near z = -1.9
    low = lidar[lidar["ring"] == 0]
    assert np.median(low["z"]) < -1.5
    radar = a[SensorKind.RADAR]
    assert 0 < len(radar) <= cfg.radar.max_points + 20
    assert np.all(np.abs(np.degrees(np.arctan2(radar["y"], radar["x"]))) <= cfg.radar.hfov_deg / 2 + 2)


def test_simulator_bag_writer_and_importers_import_no_ros() -> None:
    import subprocess
    import sys

    code = ("import sys, cmr_fusion_ros.sim, cmr_fusion_ros.bag.writer, cmr_fusion_ros.bag.importers; "
            "bad = [m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.') or m.endswith('_msgs')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_sessions_drive_overlapping_loops() -> None:
    from cmr_fusion_ros.sim.route import session_shift

    town = generate_town(4)
    route = RouteConfig(loop_blocks_x=2, loop_blocks_y=1)
    loops = [make_loop(town, route, shift=session_shift(route, town, k)) for k in range(3)]
    assert len({lp.blocks for lp in loops}) == 3
    base = np.stack([loops[0].x, loops[0].y], axis=1)[::20]
    for other in loops[1:]:
        pts = np.stack([other.x, other.y], axis=1)[::20]
        d = np.linalg.norm(pts[:, None] - base[None], axis=2)
        j = d.argmin(axis=1)
        shared = d.min(axis=1) < 0.5
        # a real share of each route is the base route, driven in the same direction; the rest is new ground
        assert 0.2 < shared.mean() < 0.8
        same_dir = np.cos(other.yaw[::20][shared] - loops[0].yaw[::20][j[shared]]) > 0.9
        assert same_dir.mean() > 0.9
    square = RouteConfig(loop_blocks_x=1, loop_blocks_y=1)
    assert {session_shift(square, town, k) for k in range(4)} == {(0, 0)}
    assert session_shift(RouteConfig(shift_sessions=False), town, 1) == (0, 0)


def test_radar_doppler_of_a_moving_car_adds_its_velocity() -> None:
    """A car driving ahead in the ego's lane: its detections show (v_car - v_sensor) . u, not just the ego motion."""
    from cmr_fusion_ros.sim.sensors import base_pose, sensor_velocity
    from cmr_fusion_ros.sim.world import _Mover

    cfg = SimConfig.from_dict({"radar": {"false_alarms_per_scan": 0.0, "doppler_noise_std": 0.0},
                               "town": {"moving_cars": 1, "pedestrians": 0, "parked_car_fill": 0.0}})
    plan = plan_session(9, 0, 1.0, cfg)
    world = plan.world
    # find an instant where the ego drives a straight segment east (yaw 0), then put the car 25 m ahead of it
    t = next(x for x in np.arange(0, 60, 0.1) if abs(plan.speed.state(plan.loop, x).yaw) < 1e-9
             and abs(plan.speed.state(plan.loop, x + 3).yaw) < 1e-9)
    ego = plan.speed.state(plan.loop, t)
    car_id = world.movers[0].object_id
    # along x at the ego's lane, 4 m/s east, at ego.x + 25 m at time t
    world.movers = [_Mover(Material.CAR, car_id, 0, ego.y, ego.x + 25.0 - 4.0 * t, 4.0, ego.x - 1000, ego.x + 1000,
                           False)]
    det = plan.radar.render(world, ego, np.random.default_rng(0))
    pose = base_pose(ego).compose(plan.radar.extrinsic)
    world_pts = np.stack([det["x"], det["y"], det["z"]], axis=1) @ pose.rotation.T + pose.translation
    on_car = (np.abs(world_pts[:, 1] - ego.y) < 1.2) & (np.abs(world_pts[:, 0] - (ego.x + 25.0)) < 2.6)
    assert on_car.sum() >= 2
    u = (world_pts[on_car] - pose.translation) / np.linalg.norm(world_pts[on_car] - pose.translation, axis=1)[:, None]
    v_sensor = sensor_velocity(ego, np.asarray(cfg.radar.translation))
    expected = (np.array([4.0, 0.0, 0.0]) - v_sensor) @ u.T
    # azimuth noise 0.3 deg only: the car's detections match the moving-target formula ...
    assert np.abs(det["doppler"][on_car] - expected).max() < 0.1
    # ... and differ from what a static object there would show by about the car's speed
    assert np.all(np.abs(det["doppler"][on_car] - (-(v_sensor @ u.T))) > 3.0)
