//! The scrub as the API shows it: the engine's findings joined with the
//! catalog, so each damaged map is named by its REST identity (volume or
//! snapshot UUID, name and project) where the catalog knows it, and by the
//! engine's id where it does not.

use super::error::ServiceError;
use super::service::Service;
use crate::control::{ScrubDamage, ScrubReport};

/// What a damaged engine map is to the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// A volume of the catalog.
    Volume,
    /// A snapshot of the catalog.
    Snapshot,
    /// A map the catalog does not know: deleted since the pass, or not made
    /// through the API.
    Unknown,
}

impl MapKind {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Volume => "Volume",
            Self::Snapshot => "Snapshot",
            Self::Unknown => "Unknown",
        }
    }
}

/// One damaged engine map with the catalog's names for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedMap {
    /// What the engine found.
    pub damage: ScrubDamage,
    /// Volume, snapshot or unknown.
    pub kind: MapKind,
    /// The catalog's name, if it knows the map.
    pub name: Option<String>,
    /// The owning project, if the catalog knows the map.
    pub project: Option<String>,
}

/// The scrub's state with every damaged map named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubView {
    /// The engine's report. Its `damaged` list is moved into `maps`.
    pub report: ScrubReport,
    /// The damaged maps, in engine id order.
    pub maps: Vec<DamagedMap>,
}

impl ScrubView {
    /// Damaged data blocks in every map together.
    pub fn damaged_blocks(&self) -> u64 {
        self.maps
            .iter()
            .fold(0u64, |sum, m| sum.saturating_add(m.damage.damaged_blocks))
    }
}

impl Service {
    /// Starts a scrub pass unless one runs; answers whether this call started
    /// one, and the scrub's state right after.
    pub fn start_scrub(&self) -> Result<(bool, ScrubView), ServiceError> {
        let started = self.inner.control.start_scrub()?;
        Ok((started, self.scrub()?))
    }

    /// The scrub's state and the last completed pass's findings, named.
    pub fn scrub(&self) -> Result<ScrubView, ServiceError> {
        let mut report = self.inner.control.scrub_status()?;
        let damaged = std::mem::take(&mut report.damaged);
        let catalog = self.inner.catalog();
        let maps = damaged
            .into_iter()
            .map(|damage| {
                let uuid = damage.uuid;
                let volume = uuid.and_then(|u| catalog.volumes.get(&u));
                let snapshot = uuid.and_then(|u| catalog.snapshots.get(&u));
                let (kind, name, project) = match (volume, snapshot) {
                    (Some(v), _) => (MapKind::Volume, Some(&v.name), Some(&v.project)),
                    (None, Some(s)) => (MapKind::Snapshot, Some(&s.name), Some(&s.project)),
                    (None, None) => (MapKind::Unknown, None, None),
                };
                DamagedMap {
                    damage,
                    kind,
                    name: name.cloned(),
                    project: project.cloned(),
                }
            })
            .collect();
        Ok(ScrubView { report, maps })
    }
}
