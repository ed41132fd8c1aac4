"""Drives keeld's Cinder dialect with openstacksdk: create, extend,
snapshot, a volume from the snapshot, a clone of the volume, delete.
Usage: openstack_sdk.py URL TOKEN (TOKEN goes out as X-Auth-Token)."""
import sys
import warnings

import openstack

warnings.filterwarnings("ignore")
url, token = sys.argv[1], sys.argv[2]
conn = openstack.connection.Connection(
    auth_type="admin_token",
    auth={"token": token, "endpoint": url + "/v3/default"},
    verify=False,
    block_storage_api_version="3",
)
bs = conn.block_storage


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


v = bs.wait_for_status(bs.create_volume(size=1, name="sdkvol"), status="available", wait=30)
check("created size", v.size, 1)
bs.extend_volume(v, 2)
check("extended size", bs.get_volume(v.id).size, 2)
s = bs.wait_for_status(bs.create_snapshot(volume_id=v.id, name="sdksnap"), status="available", wait=30)
check("snapshot volume", s.volume_id, v.id)
from_snap = bs.wait_for_status(bs.create_volume(snapshot_id=s.id, name="sdkfromsnap"), status="available", wait=30)
check("from snapshot", from_snap.snapshot_id, s.id)
clone = bs.wait_for_status(bs.create_volume(source_volume_id=v.id, name="sdkclone", size=2), status="available", wait=30)
check("clone source", clone.source_volume_id, v.id)
check("volumes", sorted(x.name for x in bs.volumes()), ["sdkclone", "sdkfromsnap", "sdkvol"])
for doomed in (from_snap, clone):
    bs.delete_volume(doomed)
    bs.wait_for_delete(doomed, wait=30)
bs.delete_snapshot(s)
bs.wait_for_delete(s, wait=30)
bs.delete_volume(v)
bs.wait_for_delete(v, wait=30)
check("left", [x.name for x in bs.volumes()], [])
print("openstacksdk cycle: ok")
