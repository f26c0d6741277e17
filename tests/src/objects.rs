//! Reading the API objects the tests check.

use k8s_openapi::api::core::v1::Container;

/// The literal value of `container`'s variable `name`, if it has one.
pub fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}
