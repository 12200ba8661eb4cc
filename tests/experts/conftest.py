"""A straight four-lane arterial of the mini map (us-ma-boston): lane 20058 (218 m, 17.88 m/s limit) of roadblock
20050, then connector 20311 (roadblock connector 20317) into roadblock 20077."""

import pytest

from simscale_env.map import load_map

LANE = "20058"
CONNECTOR = "20311"
ROUTE = ["20050", "20317", "20077"]


@pytest.fixture(scope="session")
def arterial(mini):
    return load_map("us-ma-boston", mini / "maps")
