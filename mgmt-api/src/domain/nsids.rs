//! Namespace ids. The target accepts nsids `1..=max` only (1024 on ours), while
//! volumes come and go without end, so the catalog allocates them: a volume
//! record takes the lowest free nsid when it is recorded and keeps it until the
//! record is removed. The nsid is persisted with the record, so a volume is
//! exposed under the same nsid after every restart.
//!
//! INVARIANT: no two volume records hold the same nsid, and every nsid a record
//! holds is in `1..=max`. A create that finds none free is refused; only a
//! catalog with more volumes than nsids (written by hand, or by an old build)
//! can leave a record without one.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

use super::model::{Catalog, ResourceState, VolumeRecord};

/// The lowest nsid in `1..=max` that no volume record holds.
pub fn lowest_free(catalog: &Catalog, max: u32) -> Option<u32> {
    let used: BTreeSet<u32> = catalog.volumes.values().filter_map(|v| v.nsid).collect();
    lowest_not_in(&used, max)
}

fn lowest_not_in(used: &BTreeSet<u32>, max: u32) -> Option<u32> {
    // The first gap lies within the first `used.len() + 1` candidates.
    (1..=max).take(used.len() + 1).find(|n| !used.contains(n))
}

/// One nsid a start-up repair gave or took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassigned {
    /// The volume.
    pub uuid: Uuid,
    /// Its nsid before (None: it had none).
    pub before: Option<u32>,
    /// Its nsid now (None: none was free).
    pub after: Option<u32>,
}

/// Restores the invariant over a loaded catalog: records keep a valid nsid
/// (serving volumes first where two claim one), and a record without one gets
/// its engine id if that is free and in range (the nsid every build before
/// this allocation exposed it under), else the lowest free nsid. Returns every
/// change, for the log.
pub fn repair(catalog: &mut Catalog, max: u32, engine_ids: &HashMap<Uuid, u64>) -> Vec<Reassigned> {
    let serving =
        |v: &VolumeRecord| matches!(v.state, ResourceState::Available | ResourceState::Updating);
    let mut order: Vec<Uuid> = catalog
        .volumes
        .values()
        .filter(|v| serving(v))
        .map(|v| v.uuid)
        .collect();
    order.extend(
        catalog
            .volumes
            .values()
            .filter(|v| !serving(v))
            .map(|v| v.uuid),
    );
    let mut used = BTreeSet::new();
    let mut changes = Vec::new();
    let mut homeless = Vec::new();
    for uuid in order {
        let Some(record) = catalog.volumes.get_mut(&uuid) else {
            continue;
        };
        match record.nsid {
            Some(n) if (1..=max).contains(&n) && used.insert(n) => {}
            before => {
                record.nsid = None;
                homeless.push((uuid, before));
            }
        }
    }
    for (uuid, before) in homeless {
        let legacy = engine_ids
            .get(&uuid)
            .and_then(|id| u32::try_from(*id).ok())
            .filter(|n| (1..=max).contains(n) && !used.contains(n));
        let after = legacy.or_else(|| lowest_not_in(&used, max));
        if let Some(n) = after {
            used.insert(n);
        }
        if let Some(record) = catalog.volumes.get_mut(&uuid) {
            record.nsid = after;
        }
        changes.push(Reassigned {
            uuid,
            before,
            after,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u128, state: ResourceState, nsid: Option<u32>) -> VolumeRecord {
        VolumeRecord {
            uuid: Uuid::from_u128(n),
            name: format!("v{n}"),
            project: "default".to_owned(),
            state,
            size_bytes: 1 << 20,
            sector_size_bytes: 4096,
            replica_count: 1,
            compression: false,
            acl: Vec::new(),
            ip_acl: Vec::new(),
            qos_policy: None,
            labels: Vec::new(),
            source_snapshot: None,
            source_volume: None,
            nsid,
            revision: 1,
            created_at_s: 0,
            workflow: None,
            failure: None,
        }
    }

    fn catalog(records: Vec<VolumeRecord>) -> Catalog {
        let mut c = Catalog::new();
        for r in records {
            c.volumes.insert(r.uuid, r);
        }
        c
    }

    fn nsid(c: &Catalog, n: u128) -> Option<u32> {
        c.volumes[&Uuid::from_u128(n)].nsid
    }

    #[test]
    fn the_lowest_free_nsid_fills_gaps_and_none_is_left_when_all_are_held() {
        let available = ResourceState::Available;
        let mut c = catalog(vec![
            record(1, available, Some(1)),
            record(2, available, Some(3)),
        ]);
        assert_eq!(lowest_free(&c, 4), Some(2));
        c.volumes
            .insert(Uuid::from_u128(3), record(3, available, Some(2)));
        assert_eq!(lowest_free(&c, 4), Some(4));
        assert_eq!(lowest_free(&c, 3), None);
        assert_eq!(lowest_free(&Catalog::new(), 1024), Some(1));
        assert_eq!(lowest_free(&Catalog::new(), 0), None);
    }

    #[test]
    fn repair_keeps_valid_nsids_and_migrates_legacy_records_to_their_engine_id() {
        let mut c = catalog(vec![
            record(1, ResourceState::Available, Some(7)),
            record(2, ResourceState::Creating, None),
            record(3, ResourceState::Creating, None),
            record(4, ResourceState::Failed, None),
        ]);
        // Engine id 9 is free and in range; 7 is taken; 5000 is out of range.
        let engine_ids = HashMap::from([
            (Uuid::from_u128(2), 9),
            (Uuid::from_u128(3), 7),
            (Uuid::from_u128(4), 5000),
        ]);
        let changes = repair(&mut c, 1024, &engine_ids);
        assert_eq!(nsid(&c, 1), Some(7));
        assert_eq!(nsid(&c, 2), Some(9));
        assert_eq!(nsid(&c, 3), Some(1));
        assert_eq!(nsid(&c, 4), Some(2));
        assert_eq!(changes.len(), 3);
        assert!(
            repair(&mut c, 1024, &engine_ids).is_empty(),
            "a repaired catalog is left alone"
        );
    }

    #[test]
    fn repair_gives_a_contested_nsid_to_the_serving_volume_and_moves_out_of_range_ones() {
        let mut c = catalog(vec![
            record(1, ResourceState::Deleting, Some(2)),
            record(2, ResourceState::Available, Some(2)),
            record(3, ResourceState::Available, Some(2000)),
        ]);
        let changes = repair(&mut c, 4, &HashMap::new());
        assert_eq!(nsid(&c, 2), Some(2));
        assert_eq!(nsid(&c, 3), Some(1));
        assert_eq!(nsid(&c, 1), Some(3));
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn repair_leaves_records_without_an_nsid_when_all_are_held() {
        let available = ResourceState::Available;
        let mut c = catalog(vec![
            record(1, available, Some(1)),
            record(2, available, Some(2)),
            record(3, available, None),
        ]);
        let changes = repair(&mut c, 2, &HashMap::new());
        assert_eq!(nsid(&c, 3), None);
        assert_eq!(
            changes,
            vec![Reassigned {
                uuid: Uuid::from_u128(3),
                before: None,
                after: None
            }]
        );
    }
}
