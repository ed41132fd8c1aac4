//! The project-scoped twin of every project-owned route: the seed serves
//! `/api/v2/volumes...` (project in the query or body) and
//! `/api/v2/projects/{projectName}/volumes...` (project in the path) with the
//! same operations, so one handler serves both and this step writes the
//! second form into the document from the first.

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{PathItem, Required};
use utoipa::Modify;

use super::contracts::operations_mut;

/// Route prefixes whose resources belong to a project.
const PROJECT_OWNED: &[&str] = &[
    "/api/v2/volumes",
    "/api/v2/snapshots",
    "/api/v2/qosPolicies",
];

/// Where the project-scoped form of a route lives.
const SCOPE: &str = "/api/v2/projects/{projectName}";

/// Adds `/api/v2/projects/{projectName}/<rest>` for each project-owned path,
/// with `projectName` a path parameter instead of a query one and operation
/// ids prefixed `project_`.
pub(super) struct ProjectScopedPaths;

impl Modify for ProjectScopedPaths {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scoped: Vec<(String, PathItem)> = openapi
            .paths
            .paths
            .iter()
            .filter(|(path, _)| is_project_owned(path))
            .map(|(path, item)| {
                let rest = path.trim_start_matches("/api/v2");
                (format!("{SCOPE}{rest}"), scoped_item(item.clone()))
            })
            .collect();
        openapi.paths.paths.extend(scoped);
    }
}

fn is_project_owned(path: &str) -> bool {
    PROJECT_OWNED.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

fn scoped_item(mut item: PathItem) -> PathItem {
    for operation in operations_mut(&mut item) {
        scope_operation(operation);
    }
    item
}

fn scope_operation(operation: &mut Operation) {
    if let Some(id) = operation.operation_id.as_mut() {
        *id = format!("project_{id}");
    }
    let mut parameters: Vec<Parameter> = operation
        .parameters
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.name != "projectName")
        .collect();
    parameters.insert(
        0,
        ParameterBuilder::new()
            .name("projectName")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("Project"))
            .build(),
    );
    operation.parameters = Some(parameters);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_project_owned_paths_are_scoped() {
        assert!(is_project_owned("/api/v2/volumes"));
        assert!(is_project_owned("/api/v2/volumes/{UUID}/rollback"));
        assert!(is_project_owned("/api/v2/qosPolicies/{UUID}"));
        assert!(!is_project_owned("/api/v2/volumesX"));
        assert!(!is_project_owned("/api/v2/nodes"));
        assert!(!is_project_owned("/api/v1/volumes/thickclone"));
    }

    #[test]
    fn every_scoped_operation_takes_the_project_from_its_path_alone() {
        use utoipa::OpenApi;
        let doc = super::super::ApiDoc::openapi();
        let scoped: Vec<_> = doc
            .paths
            .paths
            .iter()
            .filter(|(path, _)| path.starts_with(&format!("{SCOPE}/")))
            .collect();
        for wanted in [
            "/api/v2/projects/{projectName}/volumes",
            "/api/v2/projects/{projectName}/volumes/{UUID}/rollback",
            "/api/v2/projects/{projectName}/snapshots/",
            "/api/v2/projects/{projectName}/qosPolicies/{UUID}",
        ] {
            assert!(scoped.iter().any(|(p, _)| *p == wanted), "{wanted} missing");
        }
        for (path, item) in scoped {
            let operations = [&item.get, &item.put, &item.post, &item.delete];
            for operation in operations.into_iter().flatten() {
                let id = operation.operation_id.as_deref().unwrap_or_default();
                let project: Vec<_> = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| p.name == "projectName")
                    .collect();
                assert_eq!(project.len(), 1, "{path} {id}");
                assert!(
                    matches!(project[0].parameter_in, ParameterIn::Path),
                    "{path} {id}"
                );
                assert!(id.contains("project_"), "{path} {id}");
            }
        }
    }
}
