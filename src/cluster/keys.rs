//! The etcd key layout of a Keel cluster, in one place.
//!
//! Every key lives under [`ROOT`]:
//!
//! | key | value | lifetime |
//! | --- | --- | --- |
//! | `/keel/cluster` | [`ClusterRecord`](super::membership::ClusterRecord) as JSON: `{uuid, created_at_s}` | made once, by a txn that creates it only if absent, by whichever node comes first; never changed |
//! | `/keel/nodes/<node-uuid>` | [`NodeRecord`](super::membership::NodeRecord) as JSON | permanent; written only by the node it names (registration, capacity refresh) |
//! | `/keel/alive/<node-uuid>` | the node's UUID | attached to the node's lease: present exactly while the node keeps its lease alive, so its presence is the node's liveness |
//! | `/keel/ordinals/<n>` | the UUID of the node holding ordinal `n` (decimal, from 0) | permanent; made by a txn that creates it only if absent, lowest free `n` first |
//! | `/keel/volumes/<volume-uuid>` | [`VolumeRecord`](super::volumes::VolumeRecord) as JSON: placement, primary, epoch, in-sync set, nsid, ACL | made by the node whose API created the volume; changed only by compare-and-swap on its revision; deleted with the volume |
//! | `/keel/replicas/<volume-uuid>/<node-uuid>` | empty | made by a placement node once its replica exists; deleted with it |
//! | `/keel/progress/<volume-uuid>` | `{done_blocks, total_blocks}` of the volume's running resync or rebuild | written by the primary while a member catches up; deleted when none does |
//! | `/keel/snapshots/<snapshot-uuid>` | [`SnapshotRecord`](super::snapshots::SnapshotRecord) as JSON: volume, state, holders | made by the node whose API asked for the snapshot; taken and marked Ready by the volume's primary; marked Deleting by an API, and deleted by the last holder to drop its copy |
//! | `/keel/rollbacks/<volume-uuid>` | [`RollbackRecord`](super::snapshots::RollbackRecord) as JSON: snapshot, claim, outcome | made by the node whose API asked for the rollback; carried out and answered by the volume's primary; deleted by the asker once answered |
//! | `/keel/catalog` | the REST catalog (projects, volumes, workflows) as JSON | written under `/keel/catalog-lock` by whichever node's API changes it |
//! | `/keel/catalog-lock` | the holder's node UUID | attached to the holder's lease; made by create-if-absent, deleted when the change is stored |
//!
//! **Invariant:** no other module spells a key; they call the functions here.

use uuid::Uuid;

/// The prefix of every Keel key.
pub const ROOT: &str = "/keel/";
/// The cluster record.
pub const CLUSTER: &str = "/keel/cluster";
/// The prefix of the permanent node records.
pub const NODES_PREFIX: &str = "/keel/nodes/";
/// The prefix of the lease-bound liveness keys.
pub const ALIVE_PREFIX: &str = "/keel/alive/";
/// The prefix of the ordinal claims.
pub const ORDINALS_PREFIX: &str = "/keel/ordinals/";

/// Prefix of rebuild progress reports: `/keel/progress/<volume>`.
pub const PROGRESS_PREFIX: &str = "/keel/progress/";

/// The progress report of `volume`'s rebuild or resync.
pub fn progress(volume: Uuid) -> String {
    format!("{PROGRESS_PREFIX}{volume}")
}

/// The REST catalog every node's API shares (JSON).
pub const CATALOG: &str = "/keel/catalog";
/// Held (attached to the holder's lease) while a node changes the catalog.
pub const CATALOG_LOCK: &str = "/keel/catalog-lock";

/// Prefix of the replicated volumes' records (`volumes::VolumeRecord`).
pub const VOLUMES_PREFIX: &str = "/keel/volumes/";
/// Prefix of the keys that say a node holds its replica of a volume:
/// `/keel/replicas/<volume>/<node>`.
pub const REPLICAS_PREFIX: &str = "/keel/replicas/";

/// Prefix of the snapshot records: `/keel/snapshots/<snapshot>`.
pub const SNAPSHOTS_PREFIX: &str = "/keel/snapshots/";
/// Prefix of the rollback requests: `/keel/rollbacks/<volume>`.
pub const ROLLBACKS_PREFIX: &str = "/keel/rollbacks/";

/// The record of snapshot `snapshot`.
pub fn snapshot(snapshot: Uuid) -> String {
    format!("{SNAPSHOTS_PREFIX}{snapshot}")
}

/// The rollback request of volume `volume`.
pub fn rollback(volume: Uuid) -> String {
    format!("{ROLLBACKS_PREFIX}{volume}")
}

/// The record of volume `volume`.
pub fn volume(volume: Uuid) -> String {
    format!("{VOLUMES_PREFIX}{volume}")
}

/// The volume a `/keel/volumes/<uuid>` key names.
pub fn volume_of_key(key: &str) -> Option<Uuid> {
    key.strip_prefix(VOLUMES_PREFIX)
        .and_then(|rest| Uuid::parse_str(rest).ok())
}

/// The key saying `node` holds its replica of `volume`.
pub fn replica(volume: Uuid, node: Uuid) -> String {
    format!("{REPLICAS_PREFIX}{volume}/{node}")
}

/// The volume and node a `/keel/replicas/<volume>/<node>` key names.
pub fn replica_of_key(key: &str) -> Option<(Uuid, Uuid)> {
    let (volume, node) = key.strip_prefix(REPLICAS_PREFIX)?.split_once('/')?;
    Some((Uuid::parse_str(volume).ok()?, Uuid::parse_str(node).ok()?))
}

/// `/keel/nodes/<node>`.
pub fn node(node: Uuid) -> String {
    format!("{NODES_PREFIX}{node}")
}

/// `/keel/alive/<node>`.
pub fn alive(node: Uuid) -> String {
    format!("{ALIVE_PREFIX}{node}")
}

/// `/keel/ordinals/<ordinal>`.
pub fn ordinal(ordinal: u32) -> String {
    format!("{ORDINALS_PREFIX}{ordinal}")
}

/// The node a `/keel/nodes/<node>` key names; `None` for any other key.
pub fn node_of_record_key(key: &str) -> Option<Uuid> {
    uuid_after(key, NODES_PREFIX)
}

/// The node a `/keel/alive/<node>` key names; `None` for any other key.
pub fn node_of_alive_key(key: &str) -> Option<Uuid> {
    uuid_after(key, ALIVE_PREFIX)
}

/// The ordinal a `/keel/ordinals/<n>` key claims; `None` for any other key,
/// including non-canonical spellings such as `007`.
pub fn ordinal_of_key(key: &str) -> Option<u32> {
    let text = key.strip_prefix(ORDINALS_PREFIX)?;
    let ordinal: u32 = text.parse().ok()?;
    (ordinal.to_string() == text).then_some(ordinal)
}

fn uuid_after(key: &str, prefix: &str) -> Option<Uuid> {
    let text = key.strip_prefix(prefix)?;
    let uuid = Uuid::parse_str(text).ok()?;
    // Only the hyphenated lower-case form `node` and `alive` write.
    (uuid.to_string() == text).then_some(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_lives_under_the_root() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        for key in [
            CLUSTER.to_owned(),
            node(id),
            alive(id),
            ordinal(3),
            NODES_PREFIX.to_owned(),
            ALIVE_PREFIX.to_owned(),
            ORDINALS_PREFIX.to_owned(),
        ] {
            assert!(key.starts_with(ROOT), "{key}");
        }
        assert_eq!(node(id), "/keel/nodes/01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(
            alive(id),
            "/keel/alive/01234567-89ab-cdef-0123-456789abcdef"
        );
        assert_eq!(ordinal(12), "/keel/ordinals/12");
    }

    #[test]
    fn keys_parse_back_to_what_made_them_and_nothing_else() {
        let id = Uuid::new_v4();
        assert_eq!(node_of_record_key(&node(id)), Some(id));
        assert_eq!(node_of_alive_key(&alive(id)), Some(id));
        assert_eq!(node_of_record_key(&alive(id)), None);
        assert_eq!(node_of_alive_key(&node(id)), None);
        assert_eq!(ordinal_of_key(&ordinal(0)), Some(0));
        assert_eq!(ordinal_of_key(&ordinal(4_000)), Some(4_000));
        assert_eq!(ordinal_of_key("/keel/ordinals/007"), None);
        assert_eq!(ordinal_of_key("/keel/ordinals/-1"), None);
        assert_eq!(ordinal_of_key("/keel/ordinals/"), None);
        assert_eq!(
            node_of_record_key(&format!("{NODES_PREFIX}{}", id.simple())),
            None
        );
        assert_eq!(node_of_record_key(&format!("{}/x", node(id))), None);
    }
}
