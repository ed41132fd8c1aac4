//! Why a domain operation failed. Mapped to HTTP in `http::error` only.

use uuid::Uuid;

use super::model::ResourceState;
use super::store::StoreError;
use crate::control::ControlError;

/// Why a domain-service operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A request argument breaks the documents' rules.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The resource's state does not allow the operation (Deleting or Failed).
    #[error("{what} {id} is {state:?}; the operation is not allowed in this state")]
    InvalidState {
        /// Kind of resource.
        what: &'static str,
        /// Its identity.
        id: Uuid,
        /// Its state.
        state: ResourceState,
    },
    /// The resource does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of resource.
        what: &'static str,
        /// The identity or name asked for.
        id: String,
    },
    /// A resource with this name already exists in the project.
    #[error("{what} named {name:?} already exists")]
    AlreadyExists {
        /// Kind of resource.
        what: &'static str,
        /// The clashing name.
        name: String,
    },
    /// Another user operation is in progress on the resource.
    #[error("an operation is in progress: {0}")]
    OperationInProgress(String),
    /// The resource is still used by others (a QoS policy named by volumes
    /// or projects) and cannot be deleted.
    #[error("still in use: {0}")]
    InUse(String),
    /// The project's quota does not allow the operation.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The caller's ETag does not match the resource's current one.
    #[error("ETag mismatch: the resource's current ETag is {current:?}")]
    EtagMismatch {
        /// The current ETag.
        current: String,
    },
    /// The resource is in a temporary state (Creating or Updating); retry later.
    #[error("{what} {id} is {state:?}; retry when the operation completes")]
    TemporaryState {
        /// Kind of resource.
        what: &'static str,
        /// Its identity.
        id: Uuid,
        /// Its state.
        state: ResourceState,
    },
    /// The operation is valid but not implemented by this cluster.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// The maximum number of running workflows is reached.
    #[error("resource exhausted: {max} workflows are already running; retry after some complete")]
    TooManyWorkflows {
        /// The configured maximum.
        max: usize,
    },
    /// Every namespace id is held by a volume, so no volume can be created
    /// until one is deleted.
    #[error("resource exhausted: all {max} namespace ids are in use; delete a volume first")]
    NamespaceIdsExhausted {
        /// The target's largest namespace id.
        max: u32,
    },
    /// The engine or target refused or failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The catalog could not be persisted.
    #[error("catalog persistence failed: {0}")]
    Store(#[from] StoreError),
}
