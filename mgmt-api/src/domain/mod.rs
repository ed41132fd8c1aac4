//! The domain service: the documents' resources and rules, independent of HTTP.

pub mod catalog_store;
pub mod error;
pub mod model;
pub mod nsids;
pub mod qos;
pub mod quota;
pub mod rules;
pub mod scrub;
pub mod service;
pub mod store;
pub mod volume_types;
mod worker;
pub mod workflows;

pub use error::ServiceError;
pub use qos::{NewQosPolicy, QosPolicyChanges, QosPolicyRef};
pub use scrub::{DamagedMap, MapKind, ScrubView};
pub use service::{
    NewSnapshot, NewVolume, OpenError, Service, ServiceConfig, VolumeChanges, VolumeFilter,
    VolumeView,
};
pub use volume_types::{NewVolumeType, VolumeTypeChanges};
pub use workflows::ThickClone;
