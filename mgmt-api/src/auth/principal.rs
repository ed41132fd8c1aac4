//! Who is calling and what their role allows.

use serde::{Deserialize, Serialize};

/// The system project: a role in it is a cluster-wide role.
pub const SYSTEM_PROJECT: &str = "system";

/// A caller's role, as carried in a token's `roles` claim
/// (`system:cluster-admin`, `<project>:admin`, `<project>:viewer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// May do everything in every project.
    ClusterAdmin,
    /// May read and change everything in one project.
    ProjectAdmin(String),
    /// May read everything in one project.
    ProjectViewer(String),
}

impl Role {
    /// The role's claim spelling.
    pub fn claim(&self) -> String {
        match self {
            Self::ClusterAdmin => format!("{SYSTEM_PROJECT}:cluster-admin"),
            Self::ProjectAdmin(p) => format!("{p}:admin"),
            Self::ProjectViewer(p) => format!("{p}:viewer"),
        }
    }

    /// Parses a claim written by [`Role::claim`].
    pub fn from_claim(claim: &str) -> Option<Self> {
        let (project, role) = claim.rsplit_once(':')?;
        match (project, role) {
            (SYSTEM_PROJECT, "cluster-admin") => Some(Self::ClusterAdmin),
            (p, "admin") if !p.is_empty() => Some(Self::ProjectAdmin(p.to_owned())),
            (p, "viewer") if !p.is_empty() => Some(Self::ProjectViewer(p.to_owned())),
            _ => None,
        }
    }

    /// Parses the role names accepted by the user API (`ClusterAdmin`,
    /// `ProjectAdmin`, `ProjectViewer`), the latter two with a project.
    pub fn from_name(name: &str, project: Option<&str>) -> Option<Self> {
        match (name, project) {
            ("ClusterAdmin", _) => Some(Self::ClusterAdmin),
            ("ProjectAdmin", Some(p)) => Some(Self::ProjectAdmin(p.to_owned())),
            ("ProjectViewer", Some(p)) => Some(Self::ProjectViewer(p.to_owned())),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name or credential id.
    pub subject: String,
    /// What the caller may do.
    pub role: Role,
}

impl Principal {
    /// The principal used when authentication is disabled by configuration.
    pub fn anonymous_admin() -> Self {
        Self {
            subject: "anonymous".to_owned(),
            role: Role::ClusterAdmin,
        }
    }

    /// Whether the caller is a cluster admin.
    pub fn is_cluster_admin(&self) -> bool {
        self.role == Role::ClusterAdmin
    }

    /// The project a project-scoped caller belongs to.
    pub fn project(&self) -> Option<&str> {
        match &self.role {
            Role::ClusterAdmin => None,
            Role::ProjectAdmin(p) | Role::ProjectViewer(p) => Some(p),
        }
    }

    /// Whether the caller may read resources of `project`.
    pub fn can_read(&self, project: &str) -> bool {
        match &self.role {
            Role::ClusterAdmin => true,
            Role::ProjectAdmin(p) | Role::ProjectViewer(p) => p == project,
        }
    }

    /// Whether the caller may change resources of `project`.
    pub fn can_write(&self, project: &str) -> bool {
        match &self.role {
            Role::ClusterAdmin => true,
            Role::ProjectAdmin(p) => p == project,
            Role::ProjectViewer(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip() {
        for role in [
            Role::ClusterAdmin,
            Role::ProjectAdmin("p-1".into()),
            Role::ProjectViewer("a:b".into()),
        ] {
            assert_eq!(Role::from_claim(&role.claim()), Some(role));
        }
        assert_eq!(Role::from_claim("x:root"), None);
    }

    #[test]
    fn viewers_read_but_do_not_write() {
        let p = Principal {
            subject: "v".into(),
            role: Role::ProjectViewer("a".into()),
        };
        assert!(p.can_read("a"));
        assert!(!p.can_write("a"));
        assert!(!p.can_read("b"));
    }
}
