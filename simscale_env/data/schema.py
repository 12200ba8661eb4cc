"""nuPlan's published log schema (nuplan-devkit docs/nuplan_schema.md, v1.2.2) and the names the devkit uses.

The column order and SQLite types follow the `CREATE TABLE` statements of
nuplan/database/nuplan_db/test/minimal_db_test_utils.py, which the devkit's own readers accept.
"""

from __future__ import annotations

# table -> ((column, SQLite type), ...). `token`/`*_token` columns are 8-byte BLOBs (HexLen8 in
# nuplan/database/common/sql_types.py); calibration columns of camera/lidar are Python pickles.
NUPLAN_SCHEMA: dict[str, tuple[tuple[str, str], ...]] = {
    "log": (
        ("token", "BLOB NOT NULL"), ("vehicle_name", "VARCHAR(64)"), ("date", "VARCHAR(64)"),
        ("timestamp", "INTEGER"), ("logfile", "VARCHAR(64)"), ("location", "VARCHAR(64)"),
        ("map_version", "VARCHAR(64)"),
    ),
    "ego_pose": (
        ("token", "BLOB NOT NULL"), ("timestamp", "INTEGER"), ("x", "FLOAT"), ("y", "FLOAT"), ("z", "FLOAT"),
        ("qw", "FLOAT"), ("qx", "FLOAT"), ("qy", "FLOAT"), ("qz", "FLOAT"),
        ("vx", "FLOAT"), ("vy", "FLOAT"), ("vz", "FLOAT"),
        ("acceleration_x", "FLOAT"), ("acceleration_y", "FLOAT"), ("acceleration_z", "FLOAT"),
        ("angular_rate_x", "FLOAT"), ("angular_rate_y", "FLOAT"), ("angular_rate_z", "FLOAT"),
        ("epsg", "INTEGER"), ("log_token", "BLOB NOT NULL"),
    ),
    "camera": (
        ("token", "BLOB NOT NULL"), ("log_token", "BLOB NOT NULL"), ("channel", "VARCHAR(64)"),
        ("model", "VARCHAR(64)"), ("translation", "BLOB"), ("rotation", "BLOB"), ("intrinsic", "BLOB"),
        ("distortion", "BLOB"), ("width", "INTEGER"), ("height", "INTEGER"),
    ),
    "image": (
        ("token", "BLOB NOT NULL"), ("next_token", "BLOB"), ("prev_token", "BLOB"),
        ("ego_pose_token", "BLOB NOT NULL"), ("camera_token", "BLOB NOT NULL"), ("filename_jpg", "VARCHAR(128)"),
        ("timestamp", "INTEGER"),
    ),
    "lidar": (
        ("token", "BLOB NOT NULL"), ("log_token", "BLOB NOT NULL"), ("channel", "VARCHAR(64)"),
        ("model", "VARCHAR(64)"), ("translation", "BLOB"), ("rotation", "BLOB"),
    ),
    "lidar_pc": (
        ("token", "BLOB NOT NULL"), ("next_token", "BLOB"), ("prev_token", "BLOB"),
        ("ego_pose_token", "BLOB NOT NULL"), ("lidar_token", "BLOB NOT NULL"), ("scene_token", "BLOB"),
        ("filename", "VARCHAR(128)"), ("timestamp", "INTEGER"),
    ),
    "lidar_box": (
        ("token", "BLOB NOT NULL"), ("lidar_pc_token", "BLOB NOT NULL"), ("track_token", "BLOB NOT NULL"),
        ("next_token", "BLOB"), ("prev_token", "BLOB"), ("x", "FLOAT"), ("y", "FLOAT"), ("z", "FLOAT"),
        ("width", "FLOAT"), ("length", "FLOAT"), ("height", "FLOAT"), ("vx", "FLOAT"), ("vy", "FLOAT"),
        ("vz", "FLOAT"), ("yaw", "FLOAT"), ("confidence", "FLOAT"),
    ),
    "track": (
        ("token", "BLOB NOT NULL"), ("category_token", "BLOB NOT NULL"), ("width", "FLOAT"), ("length", "FLOAT"),
        ("height", "FLOAT"),
    ),
    "category": (("token", "BLOB NOT NULL"), ("name", "VARCHAR(64)"), ("description", "TEXT")),
    "scene": (
        ("token", "BLOB NOT NULL"), ("log_token", "BLOB NOT NULL"), ("name", "TEXT"),
        ("goal_ego_pose_token", "BLOB"), ("roadblock_ids", "TEXT"),
    ),
    "scenario_tag": (
        ("token", "BLOB NOT NULL"), ("lidar_pc_token", "BLOB NOT NULL"), ("type", "TEXT"),
        ("agent_track_token", "BLOB"),
    ),
    "traffic_light_status": (
        ("token", "BLOB NOT NULL"), ("lidar_pc_token", "BLOB NOT NULL"), ("lane_connector_id", "INTEGER"),
        ("status", "VARCHAR(8)"),
    ),
}

FOREIGN_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "ego_pose": (("log_token", "log"),),
    "camera": (("log_token", "log"),),
}


def create_table_sql(table: str) -> str:
    cols = ", ".join(f"{name} {typ}" for name, typ in NUPLAN_SCHEMA[table])
    fks = "".join(f", FOREIGN KEY({c}) REFERENCES {t} (token)" for c, t in FOREIGN_KEYS.get(table, ()))
    return f"CREATE TABLE {table} ({cols}, PRIMARY KEY (token){fks})"


# Category names (nuplan/database/utils/label/utils.py) and their tracked-object types
# (nuplan/common/actor_state/tracked_objects_types.py).
CATEGORIES: tuple[str, ...] = (
    "vehicle", "bicycle", "pedestrian", "traffic_cone", "barrier", "czone_sign", "generic_object",
)
# Integer codes used in arrays throughout the package (index into CATEGORIES).
VEHICLE, BICYCLE, PEDESTRIAN, TRAFFIC_CONE, BARRIER, CZONE_SIGN, GENERIC_OBJECT = range(7)
AGENT_CATEGORIES = (VEHICLE, BICYCLE, PEDESTRIAN)  # tracked agents with velocity
STATIC_CATEGORIES = (TRAFFIC_CONE, BARRIER, CZONE_SIGN, GENERIC_OBJECT)
# nuPlan TrackedObjectType names, by category code
TRACKED_OBJECT_TYPE = ("VEHICLE", "BICYCLE", "PEDESTRIAN", "TRAFFIC_CONE", "BARRIER", "CZONE_SIGN", "GENERIC_OBJECT")

# traffic_light_status.status -> TrafficLightStatusType (nuplan/common/maps/maps_datatypes.py)
TL_GREEN, TL_YELLOW, TL_RED, TL_UNKNOWN = 0, 1, 2, 3
TRAFFIC_LIGHT_STATUS = {"green": TL_GREEN, "yellow": TL_YELLOW, "red": TL_RED, "unknown": TL_UNKNOWN}
TRAFFIC_LIGHT_NAMES = ("green", "yellow", "red", "unknown")

# Camera channels (nuplan/planning/simulation/observation/observation_type.py CameraChannel)
CAMERA_CHANNELS = ("CAM_F0", "CAM_B0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1", "CAM_R2")
LIDAR_CHANNEL = "MergedPointCloud"

# lidar_pc is the 20 Hz master clock (`_database_row_interval = 0.05` in nuplan_scenario.py)
DATABASE_ROW_INTERVAL_S = 0.05

# The 14 scenario types of the nuPlan challenge (scenario_filter/nuplan_challenge_scenarios.yaml)
CHALLENGE_SCENARIO_TYPES = (
    "starting_left_turn", "starting_right_turn", "starting_straight_traffic_light_intersection_traversal",
    "stopping_with_lead", "high_lateral_acceleration", "high_magnitude_speed", "low_magnitude_speed",
    "traversing_pickup_dropoff", "waiting_for_pedestrian_to_cross", "behind_long_vehicle",
    "stationary_in_traffic", "near_multiple_vehicles", "changing_lane", "following_lane_with_lead",
)
